# Helpers shared by all rules: config validation, the run grid, inputs and parameters of each job.
import json
import os
import re
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import DeploymentMethod

ROOT = Path(workflow.basedir)
sys.path.insert(0, str(ROOT))
# Set (not read) for every job: jobs import the cellplm package from this checkout, also inside conda envs and
# on cluster nodes; without --use-conda, method scripts run with the interpreter that runs snakemake.
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
)

from cellplm.bench import codehash
from cellplm.bench import workflow as wf
from cellplm.bench.checkpoint_plan import cellplm_checkpoint, cellplm_corpus_items, with_checkpoint
from cellplm.bench.config import dataset_splits, to_json
from cellplm.bench.data.catalog import builtin_path, remote_files
from cellplm.bench.errors import ConfigError
from cellplm.pretrain.options import config_args

# A run killed at any point resumes with the same command: the Snakemake lock a killed run left behind is removed
# (one line says so) when no other snakemake of this workflow is alive here. Main process only: the jobs of a
# cluster run (and subprocess jobs) read this file too, while their run holds the lock.
if workflow.is_main_process:
    _stale = wf.remove_stale_locks(Path.cwd())
    if _stale:
        print(_stale, file=sys.stderr)

# The config as the rules read it: the method and embedding registries (every folder's method.yaml or
# embedding.yaml, updated by the config's sections), validated, checked, with the zero-shot rows the method registry
# declares (cellplm/bench/methods/zeroshot.yaml).
try:
    wf.complete_config(config, ROOT)
except ConfigError as e:
    raise WorkflowError(str(e)) from None

RUN = config["run"]


onstart:
    # Before any job: one line when jobs configured for a GPU would run on the CPU here (an error with
    # run.require_gpu); output folders writable and enough free space (one-line message otherwise).
    try:
        if workflow.local_exec and not workflow.touch:
            _line = wf.gpu_check(sum(map(wants_gpu, workflow.dag.needrun_jobs())), RUN["require_gpu"])
            if _line:
                print(_line, file=sys.stderr)
        wf.check_output_space(Path.cwd(), RUN["min_free_gb"])
    except ConfigError as e:
        raise WorkflowError(str(e)) from None


USE_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
DATASETS = RUN["datasets"]
ANNOTATORS = RUN["methods"]  # run by run_method
EMBEDDINGS = RUN["embeddings"]  # the zero-shot track (rules/embeddings.smk)
CONTROL_EMBEDDINGS = [e for e in EMBEDDINGS if config["embeddings"][e]["control"]]  # the bounds of each score
# the UMAP figures show neither a control nor a sentence-policy row (cellplm_<policy>: the context track)
UMAP_EMBEDDINGS = [e for e in EMBEDDINGS
                   if e not in CONTROL_EMBEDDINGS and not config["embeddings"][e].get("folder")]
ZEROSHOT = config["zeroshot"]
ZEROSHOT_METHODS = [m for m, spec in config["methods"].items() if spec.get("zeroshot_of") in EMBEDDINGS]
METHODS = ANNOTATORS + ZEROSHOT_METHODS  # every row of the annotation tables
SEEDS = RUN["seeds"]
DL = config["download"]["dir"]
REMOTE = {f["filename"]: f for ds in DATASETS for f in remote_files(config["datasets"][ds]["source"])}
ARCHIVES = wf.archive_members(config)  # archive file name -> members extracted (one pass per archive)
# CellPLM: how the checkpoint is obtained (cellplm.checkpoint) and which methods get it.
CKPT = cellplm_checkpoint(config, ROOT, DL)
CELLPLM_METHODS = [m for m in ANNOTATORS if config["methods"][m]["cellplm_checkpoint"]]
CELLPLM_EMBEDDINGS = [e for e in EMBEDDINGS if config["embeddings"][e]["cellplm_checkpoint"]]
# the tissue-context track: methods whose runs also label their test cells under other sentence policies
CONTEXT_METHODS = [m for m in ANNOTATORS
                   if wf.method_params(config["methods"][m], RUN["param_set"]).get("context_policies")]
CORPUS_ITEMS = (cellplm_corpus_items(config) if CKPT.source == "pretrain" and (CELLPLM_METHODS or CELLPLM_EMBEDDINGS)
                else [])
PRETRAIN = config["cellplm"]["pretrain"]
if (CELLPLM_METHODS or CELLPLM_EMBEDDINGS) and CKPT.missing:
    print(
        f"WARNING: CellPLM checkpoint not found: {', '.join(CKPT.missing)}. The rows of "
        f"{', '.join(CELLPLM_METHODS + CELLPLM_EMBEDDINGS)} will be recorded as failed ('checkpoint file not found'). Put the files "
        "there (see docs/checkpoints.md, 'CellPLM checkpoint'), or set cellplm.checkpoint.source to url, pretrain "
        "or none.",
        file=sys.stderr,
    )
SPEED = config["speed"]
SPEED_MODELS = wf.speed_models(config, CKPT) if SPEED["enabled"] else {}
# batch job name -> the methods it runs (batch: true), all seeds in one job; grouped by conda env only with --use-conda
BATCHES = wf.method_batches(config, by_env=USE_CONDA)
BATCHED = [m for members in BATCHES.values() for m in members]
GPU_METHODS = [m for m in ANNOTATORS if config["methods"][m]["gpu"] and m not in BATCHED]
CPU_METHODS = [m for m in ANNOTATORS if not config["methods"][m]["gpu"] and m not in BATCHED]
# embedding batch job name -> the embedding methods it runs on a dataset (batch: true; grouped as the methods')
EMBEDDING_BATCHES = wf.embedding_batches(config, by_env=USE_CONDA)
EMBEDDING_BATCHED = [e for members in EMBEDDING_BATCHES.values() for e in members]
GPU_EMBEDDINGS = [e for e in EMBEDDINGS if config["embeddings"][e]["gpu"] and e not in EMBEDDING_BATCHED]
CPU_EMBEDDINGS = [e for e in EMBEDDINGS if not config["embeddings"][e]["gpu"] and e not in EMBEDDING_BATCHED]


def code_hash(*entries):
    """The code a rule's jobs run (its script or modules and every cellplm module they import): a param, so that
    only the jobs whose code changed rerun."""
    return codehash.code_hash(ROOT, *entries)


def alternatives(names):
    """Regex matching exactly one of the names (or nothing at all when the list is empty)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


wildcard_constraints:
    dataset=alternatives(DATASETS),
    split=alternatives(config["splits"]),
    method=alternatives(METHODS),
    embedding=alternatives(EMBEDDINGS),
    seed=r"\d+",
    file=alternatives(REMOTE),
    archive=alternatives(ARCHIVES),
    model=alternatives(config["models"]),
    ckpt=alternatives([Path(CKPT.dir).name] if CKPT.files and CKPT.source != "pretrain" else []),
    ckpt_file=alternatives([Path(p).name for p in CKPT.url]),
    item=alternatives(CORPUS_ITEMS),
    pretrained=alternatives([Path(CKPT.dir).name] if CORPUS_ITEMS else []),


def runs():
    """(dataset, split, method, seed) of every method run."""
    return [
        (d, s, m, seed)
        for d in DATASETS
        for s in dataset_splits(config, d)
        for m in METHODS
        for seed in SEEDS
    ]


def run_dir(d, s, m, seed):
    return f"results/runs/{d}/{s}/{m}/seed{seed}"


def context_runs():
    """(dataset, split, method, seed) of every run that also labels its test cells under other sentence policies
    (a method with `context_policies` in its params: cellplm_finetune; the tissue-context track)."""
    return [r for r in runs() if r[2] in CONTEXT_METHODS]


def context_stability_inputs(wildcards):
    return {"predictions": [f"{run_dir(*r)}/prediction.h5ad" for r in context_runs()],
            "records": [f"{run_dir(*r)}/run.json" for r in context_runs()],
            "solutions": [solution_file(d, s) for d, s, _, _ in context_runs()]}


def run_files(name):
    """The file `name` of every run of the wildcards' dataset split, ordered method by method, seed by seed."""
    return [f"results/runs/{{dataset}}/{{split}}/{m}/seed{seed}/{name}" for m in METHODS for seed in SEEDS]


def all_scores():
    return [f"{run_dir(*r)}/scores.tsv" for r in runs()]


def all_records():
    return [f"{run_dir(*r)}/run.json" for r in runs()]


def method_runs():
    """The runs of run_method (the zero-shot rows have no job of their own)."""
    return [r for r in runs() if r[2] in ANNOTATORS]


def all_benchmarks():
    """The benchmark file of each run of method_runs(): its own job's, or its batch job's (shared by its runs)."""
    batch_of = {m: batch for batch, members in BATCHES.items() for m in members}
    return [f"results/benchmarks/methods/{d}/{s}/batch_{batch_of[m]}.tsv" if m in batch_of
            else f"results/benchmarks/methods/{d}/{s}/{m}/seed{seed}.tsv" for d, s, m, seed in method_runs()]


def dataset_split_pairs():
    return [(d, s) for d in DATASETS for s in dataset_splits(config, d)]


def final_outputs():
    return [
        "results/tables/datasets.tsv",
        "results/tables/scores.tsv",
        "results/tables/summary.tsv",
        "results/tables/comparison.tsv",
        "results/tables/fidelity.tsv",
        "results/tables/benchmark.md",
        "results/report/workflow.rst",
        "results/tables/runs.tsv",
        "results/tables/speed.tsv",
        "results/tables/zeroshot.tsv",
        "results/tables/embedding_speed.tsv",
        "results/plots/score_heatmap.png",
        "results/plots/published_comparison.png",
        "results/plots/speed.png",
        "results/plots/zeroshot_scib.png",
    ] + [f"results/plots/confusion/{d}__{s}.png" for d, s in dataset_split_pairs()] + pretraining_outputs() + umap_outputs()


def umap_outputs():
    """One UMAP figure per dataset of the zero-shot track's embeddings (the controls left out)."""
    return [f"results/plots/umap/{d}.png" for d in DATASETS] if UMAP_EMBEDDINGS and ZEROSHOT["umap"]["enabled"] else []


def speed_outputs():
    """The embedding-speed table, when speed.enabled (read by aggregate into results/tables/speed.tsv)."""
    return ["results/speed/embedding.tsv"] if SPEED["enabled"] else []


def pretraining_outputs():
    """The pretraining loss plot, when this run pretrains CellPLM."""
    return ["results/plots/cellplm_pretraining_loss.png"] if CORPUS_ITEMS else []


# ---- data ------------------------------------------------------------------------------------------


def source(wildcards):
    return config["datasets"][wildcards.dataset]["source"]


def source_h5ad(wildcards):
    src = source(wildcards)
    kind = src["kind"]
    if kind in ("download", "cellxgene"):
        return f"{DL}/{remote_files(src)[0]['filename']}"
    if kind == "archive":  # the folder its members are extracted to; the member is params.member
        return f"resources/extracted/{src['filename']}"
    if kind == "local":
        return src["path"]
    if kind == "builtin":
        return str(builtin_path(src["name"]))
    return f"resources/sources/{wildcards.dataset}.h5ad"  # pbmc12k, synthetic


def build_source_env(wildcards):
    """PBMC12K is assembled by scvi-tools; synthetic data needs only the data env."""
    env = "scvi.yaml" if source(wildcards)["kind"] == "pbmc12k" else "data.yaml"
    return str(ROOT / "workflow" / "envs" / env)


def source_downloads(wildcards):
    return {f["filename"]: f"{DL}/{f['filename']}" for f in remote_files(source(wildcards))}


def source_member(wildcards):
    """The h5ad inside the extracted folder of an archive source; "" for every other source."""
    src = source(wildcards)
    return src["member"] if src["kind"] == "archive" else ""


def split_spec(wildcards):
    return config["splits"][wildcards.split]


# ---- methods and embedding methods -----------------------------------------------------------------


def split_files(dataset, split):
    """The train and test files of a dataset split (what every method and embedding job reads)."""
    base = f"results/data/{dataset}/{split}"
    return {"train": f"{base}/train.h5ad", "test": f"{base}/test.h5ad"}


def solution_file(dataset, split):
    """The labels of a dataset split's test cells (read by control methods and control embeddings only)."""
    return f"results/data/{dataset}/{split}/solution.h5ad"


class Component:
    """The input functions of the jobs of one component kind: the annotation methods (rule run_method, wildcard
    {method}, config section and runner package `methods`) or the embedding methods of the zero-shot track (rule
    embed, {embedding}, `embeddings`). `cellplm`: the ids that get the CellPLM checkpoint."""

    def __init__(self, kind, package, cellplm):
        self.kind, self.package, self.cellplm = kind, package, cellplm

    def id(self, wildcards):
        return getattr(wildcards, self.kind)

    def spec(self, wildcards):
        """The registry entry: the folder's metadata updated by the config's section."""
        return config[self.package][self.id(wildcards)]

    def python(self, wildcards):
        """With --use-conda: `python` (the rule's conda env). Otherwise the entry's `python` key (a relative path is
        taken from the workflow root); null or missing -> python on PATH."""
        return "python" if USE_CONDA else wf.method_python(self.spec(wildcards)["python"], ROOT)

    def command(self, wildcards):
        return wf.method_command(self.id(wildcards), self.spec(wildcards), self.package)

    def env(self, wildcards):
        """The conda env file of the entry (from the workflow root)."""
        return str(ROOT / self.spec(wildcards)["env"])

    def threads(self, wildcards):
        return self.spec(wildcards)["threads"]

    def params_json(self, wildcards):
        """A job's --params: the entry's params (of run.param_set), paths of its fetched model, the CellPLM
        checkpoint."""
        spec = self.spec(wildcards)
        params = {**wf.method_params(spec, RUN["param_set"]), **wf.fetched_model_params(config, spec)}
        return to_json(with_checkpoint(params, CKPT) if self.id(wildcards) in self.cellplm else params)

    def code_hash(self, wildcards):
        """The code a job runs: the entry's own script, or the runner and its folder's entry module."""
        spec = self.spec(wildcards)
        if spec.get("script"):
            return code_hash(spec["script"])
        entry_module = spec["entry"].partition(":")[0]
        folder = spec.get("folder") or self.id(wildcards)  # a variant (cellplm_single) runs its folder's code
        return code_hash(f"cellplm.bench.{self.package}.__main__",
                         f"cellplm.bench.{self.package}.{folder}.{entry_module}")

    def member(self, name):
        """Wildcards naming one member of a batch job, for the accessors above."""
        return SimpleNamespace(**{self.kind: name})

    def batch_code_hash(self, members):
        """The code of every member of a batch job (it reruns when one member's code changes)."""
        return "-".join(self.code_hash(self.member(m)) for m in members)

    def model_inputs(self, wildcards):
        """The checkpoint files of an entry that gets the CellPLM checkpoint; the folder of a fetched model."""
        inputs = {}
        if self.id(wildcards) in self.cellplm and CKPT.files:
            inputs["checkpoint_config"], inputs["checkpoint_weights"] = CKPT.files
        if self.spec(wildcards)["model"]:  # a fetched pretrained model (scGPT, Geneformer)
            inputs["model"] = wf.model_dir(self.spec(wildcards)["model"])
        return inputs


METHOD_JOBS = Component("method", "methods", CELLPLM_METHODS)
EMBEDDING_JOBS = Component("embedding", "embeddings", CELLPLM_EMBEDDINGS)


def wants_gpu(job):
    """Whether a job of this run is configured for a GPU and picks its device itself (wf.wants_gpu): the GPU rules'
    methods and embedding methods, the pretraining and the speed job (with their `gpu` and `device` settings)."""
    name = job.rule.name
    if name in ("run_method_gpu", "embed_gpu"):
        spec = (METHOD_JOBS if name == "run_method_gpu" else EMBEDDING_JOBS).spec(job.wildcards)
        return wf.wants_gpu(spec["gpu"], wf.method_params(spec, RUN["param_set"]))
    if name in ("cellplm_pretrain", "speed_embedding"):
        section = PRETRAIN if name == "cellplm_pretrain" else SPEED
        return wf.wants_gpu(section["gpu"], section)
    return False


def runs_inputs(wildcards, methods):
    """The inputs of a job that runs `methods` on the wildcards' dataset split: the split files, the solution when one
    of them is a control (only control methods may see the truth), and each method's model inputs."""
    inputs = split_files(wildcards.dataset, wildcards.split)
    for m in methods:
        if config["methods"][m]["control"]:
            inputs["solution"] = solution_file(wildcards.dataset, wildcards.split)
        inputs.update(METHOD_JOBS.model_inputs(METHOD_JOBS.member(m)))
    return inputs


def method_inputs(wildcards):
    return runs_inputs(wildcards, [wildcards.method])


def solution_arg(wildcards, input):
    return f"--solution {input.solution}" if "solution" in input.keys() else ""


def batch_files(members):
    """The prediction and run record of every run of a batch job, named <method>_seed<seed>_<file>."""
    return {f"{m}_seed{seed}_{name}": f"results/runs/{{dataset}}/{{split}}/{m}/seed{seed}/{file}"
            for m in members for seed in SEEDS for name, file in [("prediction", "prediction.h5ad"),
                                                                    ("record", "run.json")]}


def batch_inputs(members):
    """Input function of a batch job (runs_inputs of its members)."""
    return lambda wildcards: runs_inputs(wildcards, members)


def batch_runs(members):
    """The --runs JSON of a batch job: method, seed, params and output files of each run."""
    def runs(wildcards, output):
        return to_json([{"method": m, "seed": seed, "params": json.loads(METHOD_JOBS.params_json(METHOD_JOBS.member(m))),
                         "prediction": output[f"{m}_seed{seed}_prediction"],
                         "record": output[f"{m}_seed{seed}_record"]} for m in members for seed in SEEDS])
    return runs


# ---- zero-shot track -------------------------------------------------------------------------------


def embedding_split(wildcards):
    return wf.embedding_split(config, wildcards.dataset)


def embedding_inputs(wildcards):
    """The split files, the solution for a control (only controls may see the labels: the harness gives them to those
    that need them) and the model inputs of an embedding job."""
    split = embedding_split(wildcards)
    inputs = {**split_files(wildcards.dataset, split), **EMBEDDING_JOBS.model_inputs(wildcards)}
    if EMBEDDING_JOBS.spec(wildcards)["control"]:
        inputs["solution"] = solution_file(wildcards.dataset, split)
    return inputs


def embedding_batch_inputs(members):
    """Input function of an embedding batch job: the split files, the solution when a member is a control, and each
    member's model inputs."""
    def inputs(wildcards):
        split = embedding_split(wildcards)
        out = split_files(wildcards.dataset, split)
        for e in members:
            if config["embeddings"][e]["control"]:
                out["solution"] = solution_file(wildcards.dataset, split)
            out.update(EMBEDDING_JOBS.model_inputs(EMBEDDING_JOBS.member(e)))
        return out
    return inputs


def embedding_batch_files(members):
    """The embedding and run record of every member of an embedding batch job, named <embedding>_<file>."""
    return {f"{e}_{name}": f"results/embeddings/{{dataset}}/{e}/{file}"
            for e in members for name, file in [("embedding", "embedding.h5ad"), ("record", "run.json")]}


def embedding_batch_runs(members):
    """The --runs JSON of an embedding batch job: each member's code folder, id, params and output files."""
    def runs(wildcards, output):
        return to_json([{"embedding": config["embeddings"][e].get("folder") or e, "id": e,
                         "params": json.loads(EMBEDDING_JOBS.params_json(EMBEDDING_JOBS.member(e))),
                         "embedding_path": output[f"{e}_embedding"], "record": output[f"{e}_record"]}
                        for e in members])
    return runs


def embedding_files(name, dataset="{dataset}", embeddings=EMBEDDINGS):
    """The file `name` (embedding.h5ad, run.json) of every embedding method of a dataset, in run order."""
    return [f"results/embeddings/{dataset}/{e}/{name}" for e in embeddings]


def zeroshot_runs():
    """(method, seed) of every zero-shot row of a dataset split, in the order of zeroshot_files."""
    return [(m, seed) for m in ZEROSHOT_METHODS for seed in SEEDS]


def zeroshot_files(name):
    return [f"results/runs/{{dataset}}/{{split}}/{m}/seed{seed}/{name}" for m, seed in zeroshot_runs()]


def zeroshot_split_inputs(wildcards):
    return {**split_files(wildcards.dataset, wildcards.split),
            "embeddings": embedding_files("embedding.h5ad", wildcards.dataset),
            "embedding_records": embedding_files("run.json", wildcards.dataset)}


def all_scib_scores():
    return [f"results/embeddings/{d}/scib.tsv" for d in DATASETS] if EMBEDDINGS else []


def all_embedding_files(name, embeddings=EMBEDDINGS):
    """The file `name` of every embedding method of every dataset, dataset by dataset (embedding_files' order)."""
    return [f for d in DATASETS for f in embedding_files(name, d, embeddings)]


# ---- report ----------------------------------------------------------------------------------------


def confusion_seed():
    return RUN["confusion_seed"] if RUN["confusion_seed"] in SEEDS else SEEDS[0]


def confusion_inputs(wildcards):
    return [f"{run_dir(wildcards.dataset, wildcards.split, m, confusion_seed())}/confusion.tsv" for m in METHODS]


def pretraining_records():
    """pretraining.json of the checkpoint pretrained here (read by aggregate for the provenance labels)."""
    return [f"{CKPT.dir}/pretraining.json"] if CORPUS_ITEMS else []


# ---- speed -----------------------------------------------------------------------------------------


def speed_cells_input(wildcards):
    return f"results/data/{wf.speed_dataset(config)}/dataset.h5ad"


def speed_interpreters():
    """One file per model holding its interpreter's path (models whose method is missing get none)."""
    return {m: f"results/speed/interpreters/{m}.txt" for m, spec in SPEED_MODELS.items() if not spec["reason"]}


def speed_embedding_inputs(wildcards):
    inputs = {"cells": "results/speed/cells.h5ad", **speed_interpreters()}
    if SPEED_MODELS.get("cellplm", {}).get("options", {}).get("weights") == "checkpoint" and CKPT.files:
        inputs["checkpoint_config"], inputs["checkpoint_weights"] = CKPT.files
    for name, spec in SPEED_MODELS.items():
        if spec["fetched"]:
            inputs[f"model_{name}"] = wf.model_dir(spec["fetched"])
    return inputs


def speed_model_method(wildcards):
    return SimpleNamespace(method=SPEED_MODELS[wildcards.model]["method"])


def speed_model_env(wildcards):
    return METHOD_JOBS.env(speed_model_method(wildcards))


def speed_model_python(wildcards):
    return METHOD_JOBS.python(speed_model_method(wildcards))


# ---- CellPLM ---------------------------------------------------------------------------------------


def checkpoint_link_inputs(wildcards):
    return {"config": CKPT.config_src, "weights": CKPT.weights_src}


def corpus_inputs(wildcards):
    """Train files of every split variant of the dataset (a train__<dataset> item); nothing otherwise."""
    if wildcards.item.startswith("train__"):
        d = wildcards.item.removeprefix("train__")
        return [f"results/data/{d}/{s}/train.h5ad" for s in dataset_splits(config, d)]
    return []


def corpus_spec(wildcards):
    if wildcards.item == "synthetic_spatial":
        return PRETRAIN["corpus"]["synthetic_spatial"]
    return {}


def corpus_files():
    return [f"results/cellplm/corpus/{item}.h5ad" for item in CORPUS_ITEMS]


def pretrain_args():
    """The pretraining command line of the config's cellplm.pretrain section (built from the options the command
    itself defines: cellplm/pretrain/options.py)."""
    return shlex.join(config_args(PRETRAIN))
