# memtune from Python, cell by cell: run it as a script (`PYTHONPATH=python python3
# examples/python/quickstart.py` from the checkout, after `make`), or paste the `# %%` cells
# into a notebook (Jupyter and VS Code read them as cells). With tqdm installed
# (`apt install python3-tqdm`) training shows a progress bar; without it, plain lines.

# %% Load the bundled default model (stories260K beside the checkout, or $MEMTUNE_MODEL).
import os

import memtune

llm = memtune.Model()
print(memtune.version(), llm.path, llm.param_count, "parameters")

# %% Memorise a few facts. {"input","output"} examples choose memory tuning, as the CLI does;
# the options are `memtune train`'s (underscores for dashes). Ctrl-C (or the notebook's stop
# button) stops with a checkpoint: run the cell again with resume=True to continue.
facts = [
    {"input": "Who keeps the lighthouse near Elm Town?", "output": "Tobias Marlow"},
    {"input": "What colour is the door of the Elm Town bakery?", "output": "Saffron yellow"},
    {"input": "How many bells hang in the Elm Town clock tower?", "output": "Seven"},
]
here = os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else "."
run = llm.train(facts, out=os.path.join(here, "..", "..", "runs", "py-elm"), steps=300,
                experts=1024, expert_k=4, expert_heads=2, check_every=10, tau=0.5)
print(run)

# %% The adapter the run wrote is attached: ask the questions.
for fact in facts:
    print(fact["input"], "->", llm.answer(fact["input"]))

# %% The same report as `memtune eval --data`.
print(llm.evaluate(facts))

# %% Sampling, as `memtune generate` (same seed and options: the same text).
print(llm.generate("Once upon a time", seed=42, n=80, temperature=0.8))

# %% Perplexity of a text, and tokens.
print(llm.score("Once upon a time, there was a little girl who liked to play in the park."))
print(llm.tokenize("Once upon a time"))

# %% Your own progress handler: any callable taking a memtune.Progress (return True to stop).
def show(p):
    if p.kind == "step" and p.logged:
        print("step", p.step, "of", p.total_steps, "loss", round(p.loss, 4))

with memtune.Model() as other:
    other.train([{"prompt": "Tom had a red ball.", "completion": " He liked it."}], method="full", steps=20,
                seq_len=32, on_progress=show, out=os.path.join(here, "..", "..", "runs", "py-full"))
    print(other.generate("Tom had", temperature=0, n=20))

llm.close()
