"""ctypes declarations of the parts of libmemtune (include/memtune.h) the package uses.

Only structs that belong to this binding's own section of the header (mt_progress) or that
end in a reserve are laid out here; training options go by name (mt_train_options_set), so
fields added to the C struct never shift what Python writes."""
import ctypes
import os
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char, c_char_p, c_double, c_float, c_int, c_long,
                    c_size_t, c_uint64, c_void_p)

LIBRARY_NAME = "libmemtune.so"


def _candidates():
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, LIBRARY_NAME)  # installed beside the package
    yield os.path.join(here, "..", "..", "build", LIBRARY_NAME)  # a checkout: python/memtune -> build/
    yield os.path.join(os.getcwd(), "build", LIBRARY_NAME)


def find_library():
    """MEMTUNE_LIB, else libmemtune.so next to the package, else the checkout's build/."""
    env = os.environ.get("MEMTUNE_LIB")
    if env:
        if not os.path.isfile(env):
            raise OSError("MEMTUNE_LIB=%s: no such file" % env)
        return os.path.abspath(env)
    for path in _candidates():
        if os.path.isfile(path):
            return os.path.abspath(path)
    raise OSError("libmemtune.so not found beside the package, in build/ or through MEMTUNE_LIB "
                  "(build it with `make` in the memtune checkout)")


class Progress(Structure):
    _fields_ = [("kind", c_int), ("method", c_char_p), ("message", c_char_p),
                ("step", c_long), ("total_steps", c_long),
                ("loss", c_double), ("window_loss", c_double), ("lr", c_double), ("grad_norm", c_double),
                ("tokens_per_s", c_double), ("elapsed_s", c_double),
                ("logged", c_int), ("eval_loss", c_double),
                ("facts", c_int), ("facts_memorised", c_int), ("facts_exact", c_int),
                ("general_perplexity", c_double), ("base_perplexity", c_double), ("general_ratio", c_double),
                ("general_limit", c_double), ("general_weight", c_double), ("facts_answered", c_int)]


PROGRESS_KINDS = ["info", "warning", "step", "eval", "check", "guard", "stopped", "step_end", "dry_run", "recall"]

_RESERVE = 512  # room for fields a later library appends to a struct the caller allocates


class TrainResult(Structure):
    _fields_ = [("steps", c_long), ("tokens", c_long), ("train_loss", c_double), ("eval_loss", c_double),
                ("seconds", c_double), ("interrupted", c_int), ("completed", c_int), ("recall", c_double),
                ("perplexity_ratio", c_double), ("_reserve", c_char * _RESERVE)]


class GenerateOptions(Structure):
    _fields_ = [("max_new_tokens", c_int), ("echo_prompt", c_int), ("limit_includes_prompt", c_int),
                ("temperature", c_float), ("top_k", c_int), ("top_p", c_float), ("seed", c_uint64),
                ("stop_at_eos", c_int), ("_reserve", c_char * _RESERVE)]


class GenerateStats(Structure):
    _fields_ = [("prompt_tokens", c_int), ("generated_tokens", c_int), ("prompt_seconds", c_double),
                ("generate_seconds", c_double), ("stop_reason", c_char_p), ("_reserve", c_char * _RESERVE)]


class LoadOptions(Structure):
    _fields_ = [("tokenizer_path", c_char_p), ("_reserve", c_char * _RESERVE)]


class TextScore(Structure):
    _fields_ = [("tokens", c_long), ("nll", c_double), ("perplexity", c_double), ("_reserve", c_char * _RESERVE)]


class SqlLimits(Structure):
    _fields_ = [("max_steps", c_long), ("max_seconds", c_double), ("max_rows", c_long), ("max_bytes", c_long)]


class EvalOptions(Structure):
    _fields_ = [("report_path", c_char_p), ("normalize", c_int), ("db_path", c_char_p), ("limits", SqlLimits),
                ("max_new_tokens", c_int), ("_reserve", c_char * _RESERVE)]


class DataScore(Structure):
    _fields_ = [("examples", c_long), ("exact_match", c_double), ("nll", c_double), ("answer_tokens", c_long)]


class EvalScore(Structure):
    _fields_ = [("base", DataScore), ("sql_examples", c_long), ("sql_match", c_long), ("sql_invalid", c_long),
                ("sql_gold_errors", c_long), ("execution_accuracy", c_double), ("_reserve", c_char * _RESERVE)]


PROGRESS_CALLBACK = CFUNCTYPE(c_int, POINTER(Progress), c_void_p)
TEXT_CALLBACK = CFUNCTYPE(c_int, POINTER(c_char), c_size_t, c_void_p)


def _declare(lib):
    def fn(name, restype, *argtypes):
        f = getattr(lib, name)
        f.restype = restype
        f.argtypes = list(argtypes)
    P = c_void_p
    fn("mt_last_error", c_char_p)
    fn("mt_status_name", c_char_p, c_int)
    fn("mt_version", c_char_p)
    fn("mt_set_threads", None, c_int)
    fn("mt_model_load", c_int, c_char_p, POINTER(LoadOptions), POINTER(P))
    fn("mt_model_free", None, P)
    fn("mt_model_tokenizer", P, P)
    fn("mt_model_set_context", c_int, P, c_int)
    fn("mt_model_save", c_int, P, c_char_p, c_int)
    fn("mt_format_parse", c_int, c_char_p, POINTER(c_int))
    fn("mt_model_param_count", c_size_t, P)
    fn("mt_tokenize", c_int, P, c_char_p, c_int, POINTER(POINTER(c_int)), POINTER(c_int))
    fn("mt_detokenize", c_int, P, POINTER(c_int), c_int, POINTER(c_void_p))
    fn("mt_generate_options_default", None, POINTER(GenerateOptions))
    fn("mt_generate", c_int, P, c_char_p, POINTER(GenerateOptions), TEXT_CALLBACK, P, POINTER(GenerateStats))
    fn("mt_answer", c_int, P, c_char_p, c_int, POINTER(c_void_p))
    fn("mt_train_options_new", P)
    fn("mt_train_options_free", None, P)
    fn("mt_train_options_set", c_int, P, c_char_p, c_char_p)
    fn("mt_train_options_set_progress", None, P, PROGRESS_CALLBACK, P, POINTER(c_int))
    fn("mt_train_run", c_int, P, c_char_p, P, POINTER(TrainResult))
    fn("mt_adapter_set_load_scaled", c_int, P, c_char_p, c_float, POINTER(P))
    fn("mt_adapter_set_lora", P, P)
    fn("mt_adapter_set_free", None, P)
    fn("mt_model_attach_lora", c_int, P, P)
    fn("mt_model_attach_mome", c_int, P, P)
    fn("mt_lora_merge_report", c_int, P, P, c_float, POINTER(c_double))
    fn("mt_lora_param_count", c_size_t, P)
    fn("mt_eval_text", c_int, P, c_char_p, c_size_t, POINTER(TextScore))
    fn("mt_eval_data_file_opts", c_int, P, c_char_p, POINTER(EvalOptions), POINTER(EvalScore))
    fn("mt_normalize_parse", c_int, c_char_p)
    return lib


_lib = None
_libc = None


def lib():
    global _lib, _libc
    if _lib is None:
        _lib = _declare(ctypes.CDLL(find_library()))
        _libc = ctypes.CDLL(None)
        _libc.free.argtypes = [c_void_p]
        _libc.free.restype = None
    return _lib


def free(ptr):
    """Frees memory the library malloc'd for us."""
    lib()
    _libc.free(ptr)
