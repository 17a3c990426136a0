"""memtune from Python: fine-tune, memory-tune and run Llama-family models with the memtune C
library (libmemtune.so through ctypes; standard library only).

    import memtune
    llm = memtune.Model()                      # the bundled default model, or Model("path", adapter=...)
    run = llm.train("facts.jsonl")             # or a list of dicts; the method is chosen as the CLI does
    llm.answer("Who keeps the lighthouse near Elm Town?")   # uses what was just trained
    llm.evaluate("facts.jsonl")                # the report of `memtune eval --data`

Options are the CLI's (`memtune train --help`), with underscores: seq_len=64, no_memory_lora=True.
Errors are memtune.Error with the library's message and status.
"""
from .model import Error, Interrupted, Model, Progress, TrainResult, default_model_path, version
from .progress import LinePrinter, TqdmPrinter, default_printer

__all__ = ["Error", "Interrupted", "Model", "Progress", "TrainResult", "default_model_path", "version",
           "LinePrinter", "TqdmPrinter", "default_printer"]
