"""profiles/slurm against a live one-node SLURM cluster on this machine (tools/slurm_localhost.sh).

The SLURM demo command of docs/cluster.md runs a documented subset of the demo (below) through SLURM; every non-local
job
must have gone through sbatch and finished there, and the tables must equal those of a local run of the subset.
Needs root and Debian's slurm-wlm + munge (`make test` installs them); skipped otherwise, with the reason.
"""

import collections
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import ROOT
from test_workflow import copy_workflow, snakemake

pytestmark = pytest.mark.slow

TOOL = ROOT / "tools" / "slurm_localhost.sh"
# The subset run through SLURM: the full demo is ~150 SLURM jobs of 10-20 s each (two snakemake start-ups per job)
# on 2 cores, far too slow for CI. This keeps every kind of non-local job of the method stage: data building,
# preprocessing, splitting, CPU methods, a GPU-rule method (scANVI: --gpus=1 on partition gpu) and scoring.
SUBSET = """\
run: {datasets: [synthetic], methods: [majority_class, logistic_regression, scanvi], embeddings: [], seeds: [0]}
# scANVI: the demo runs it in a CPU batch job; here in the GPU rule, with a few epochs (both runs train the same)
methods: {scanvi: {gpu: true, batch: false, test_params: {scvi_epochs: 5, scanvi_epochs: 2}}}
datasets: {synthetic: {splits: [published]}}
speed: {enabled: false}
"""
GPU_METHOD = "scanvi"  # gpu: true (its method.yaml, and SUBSET over the demo's): its job goes to rule run_method_gpu
# The SLURM comment of the batch job of the light methods (majority class and logistic regression: batch: true)
CANCEL = "rule_run_batch_classic_wildcards_synthetic_published"
# Run-record columns that legitimately differ between two runs of the same job.
VOLATILE = {"fit_s", "predict_s", "peak_rss_mb", "peak_gpu_mb", "host", "finished"}


CLUSTER_DOC = ROOT / "docs" / "cluster.md"  # the page that documents profiles/slurm, with the demo command


def documented_slurm_demo_command() -> list[str]:
    """docs/cluster.md's command that runs the demo through profiles/slurm (the one the test must run)."""
    text = CLUSTER_DOC.read_text()
    lines = [
        line.split("#")[0].strip()
        for line in text.splitlines()
        if line.startswith("snakemake --workflow-profile profiles/slurm") and "config/demo.yaml" in line
    ]
    assert len(lines) == 1, f"docs/cluster.md: expected one SLURM demo command line, found {lines}"
    return shlex.split(lines[0])


def with_subset(args: list[str], subset: str) -> list[str]:
    """args with `subset` appended to the values of --configfile (a second --configfile would replace the first)."""
    i = args.index("--configfile") + 1
    while i < len(args) and not args[i].startswith("-"):
        i += 1
    return args[:i] + [subset] + args[i:]


def copy_subset_workflow(dest):
    copy_workflow(dest)
    (dest / "config" / "slurm_subset.yaml").write_text(SUBSET)
    return dest


def tool(*args, check=True):
    return subprocess.run(["bash", str(TOOL), *args], capture_output=True, text=True, check=check, timeout=300)


@pytest.fixture(scope="module")
def cluster():
    """A running cluster: started here (and stopped afterwards) unless one of tools/slurm_localhost.sh is up."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed in this environment (requirements/lock.txt)")
    if os.geteuid() != 0:
        pytest.skip("needs root: tools/slurm_localhost.sh starts munged, slurmctld and slurmd")
    if not all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged")):
        pytest.skip("slurm-wlm/munge not installed (as root: tools/slurm_localhost.sh install, which make test runs)")
    conf = "/etc/slurm/slurm.conf"
    if os.path.exists(conf) and "written by tools/slurm_localhost.sh" not in open(conf).read():
        pytest.skip(f"{conf} belongs to a real cluster: not starting a test cluster here")
    already_up = tool("status", check=False).returncode == 0
    t0 = time.monotonic()
    started = tool("start", check=False)
    assert started.returncode == 0, started.stderr
    print(f"\nSLURM cluster {'already up' if already_up else 'started'} in {time.monotonic() - t0:.1f} s")
    yield
    if not already_up:
        tool("stop", check=False)


def declared_local_rules() -> set[str]:
    """Rules that say `localrule: True` in the workflow's sources, plus the target rule `all` (no action)."""
    local = {"all"}
    for path in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        for block in re.split(r"^(?=rule \w+:|use rule )", path.read_text(), flags=re.M):
            name = re.match(r"(?:rule (\w+):|use rule \S+ as (\w+))", block)
            if name and re.search(r"^\s+localrule:\s*True", block, re.M):
                local.add(name.group(1) or name.group(2))
    return local


def submissions(log: str) -> list[tuple[str, str]]:
    """(SLURM job id, rule) of every job the plugin submitted, from snakemake's log."""
    found = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", log)
    return [(jobid, re.search(r"slurm_logs/rule_(\w+?)/", path).group(1)) for jobid, path in found]


def scontrol(jobid: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", "-o", jobid], capture_output=True, text=True, check=True).stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


# A failed job's log files, which Snakemake prints into its own output (snakemake.logging.show_logs): "Logfile <path>:"
# and the file's lines between two equal rules of "=". A SLURM job's log holds the Snakemake run inside the job, whose
# "localrule <name>:" lines are not jobs of this host.
JOB_LOG = re.compile(r"^Logfile [^\n]*:\n(=+)\n.*?^\1\n", re.M | re.S)


def without_job_logs(log: str) -> str:
    return JOB_LOG.sub("", log)


def cancel_when_running(comment_prefix: str, proc, timeout: float) -> str:
    """scancel the first SLURM job whose comment starts with ``comment_prefix`` once it has run 3 s; its id."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        out = subprocess.run(["squeue", "-h", "-o", "%i %T %M %200k"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            jobid, state, elapsed, comment = (line.split(maxsplit=3) + [""])[:4]
            if comment.startswith(comment_prefix) and state == "RUNNING" and elapsed not in ("0:00", "0:01", "0:02"):
                subprocess.run(["scancel", jobid], check=True)
                return jobid
        time.sleep(0.5)
    raise AssertionError(f"no running SLURM job {comment_prefix}* to cancel (snakemake exit {proc.poll()})")


def run(workdir, args, timeout):
    t0 = time.monotonic()
    out = snakemake(workdir, *args, timeout=timeout)
    return out, time.monotonic() - t0


def test_demo_subset_through_slurm_equals_local_run(cluster, tmp_path):
    command = documented_slurm_demo_command()
    assert command[:3] == ["snakemake", "--workflow-profile", "profiles/slurm"], command
    slurm_args = with_subset(command[1:], "config/slurm_subset.yaml")

    slurm_dir = copy_subset_workflow(tmp_path / "slurm")
    dry = snakemake(slurm_dir, *slurm_args, "-n")
    assert dry.returncode == 0, dry.stderr[-3000:]
    planned = collections.Counter(re.findall(r"^rule (\w+):$", dry.stdout, re.M))
    local_rules = declared_local_rules()
    planned_remote = collections.Counter({r: n for r, n in planned.items() if r not in local_rules})
    assert planned_remote["run_method_gpu"] == 1 and planned_remote["run_batch_classic"] == 1, planned
    assert "run_method" not in planned_remote, planned
    assert {"aggregate", "plots", "all"} <= set(planned) & local_rules, planned

    # The batch job of majority class and logistic regression is cancelled once while it runs (scancel, as a user or an
    # admin would): the
    # profile's retries resubmit it (with twice the memory: a CPU job, so that still fits this one node), and the
    # run still ends with the local run's results.
    t0 = time.monotonic()
    with open(tmp_path / "slurm.log", "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "snakemake", *slurm_args],
            cwd=slurm_dir,
            env=dict(os.environ, PYTHONPATH=str(slurm_dir)),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            cancelled = cancel_when_running(CANCEL, proc, timeout=900)
            proc.wait(timeout=900)
        finally:
            if proc.poll() is None:
                proc.kill()
    log = (tmp_path / "slurm.log").read_text()
    print(f"SLURM run of the demo subset (one job cancelled): {time.monotonic() - t0:.0f} s")
    assert proc.returncode == 0, log[-5000:]
    # Every non-local job, and only those, went through sbatch, once (the cancelled one twice); snakemake ran the
    # local rules (localrule: True) on this host.
    submitted = submissions(log)
    assert collections.Counter(rule for _, rule in submitted) == planned_remote + collections.Counter(
        run_batch_classic=1
    )
    ran_here = collections.Counter(re.findall(r"^localrule (\w+):$", without_job_logs(log), re.M))
    assert ran_here == planned - planned_remote, ran_here
    assert len({jobid for jobid, _ in submitted}) == len(submitted)
    assert scontrol(cancelled)["JobState"] == "CANCELLED" and cancelled in {jobid for jobid, _ in submitted}
    submitted = [(jobid, rule) for jobid, rule in submitted if jobid != cancelled]
    run_uuid = re.search(r"SLURM run ID: (\S+)", log).group(1)
    for jobid, rule in submitted:
        job = scontrol(jobid)
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", (rule, job)
        assert job["JobName"] == run_uuid and job["Comment"].startswith(f"rule_{rule}"), job
        assert job["Account"].lower() == "change_me"  # the profile's default-resources reached sbatch
        if rule == "run_method_gpu":  # a real GPU request on the GPU partition
            assert job["Partition"] == "gpu" and job.get("TresPerJob") == "gres:gpu:1", job
            assert job.get("CpusPerTres") == "gres:gpu:1", job  # --cpus-per-gpu = the rule's threads (1)
        else:
            assert job["Partition"] == "cpu" and "gpu" not in job.get("TresPerJob", ""), job
        slurm_log = slurm_dir / ".snakemake" / "slurm_logs"
        assert list(slurm_log.glob(f"rule_{rule}/**/{jobid}.log")), f"no SLURM log of job {jobid} ({rule})"

    local_args = [a for a in slurm_args if a not in ("--workflow-profile", "profiles/slurm")] + ["--cores", "2"]
    local_dir = copy_subset_workflow(tmp_path / "local")
    out, local_s = run(local_dir, local_args, timeout=900)
    print(f"local run of the demo subset: {local_s:.0f} s")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SLURM" not in out.stdout + out.stderr

    for name in ("scores.tsv", "summary.tsv"):
        ours, local = (
            pd.read_csv(d / "results" / "tables" / name, sep="\t", keep_default_na=False)
            for d in (slurm_dir, local_dir)
        )
        pd.testing.assert_frame_equal(ours, local, check_exact=False, rtol=1e-9, obj=name)
    runs = [
        pd.read_csv(d / "results" / "tables" / "runs.tsv", sep="\t", keep_default_na=False)
        for d in (slurm_dir, local_dir)
    ]
    stable = [c for c in runs[0].columns if c not in VOLATILE]
    pd.testing.assert_frame_equal(runs[0][stable], runs[1][stable], obj="runs.tsv")
    assert (runs[0]["status"] == "ok").all(), runs[0][["method", "status", "reason"]]
    assert set(runs[0]["method"]) == {"majority_class", "logistic_regression", GPU_METHOD}


TOY = """\
rule all:
    input: "flaky.txt", "gpu.txt"

rule flaky:  # fails unless SLURM gave it 8000 MB: the profile's default mem_mb is 4000 * attempt
    output: "flaky.txt"
    shell:
        "mem=$(scontrol show job -o $SLURM_JOB_ID | grep -o 'MinMemoryNode=[0-9]*' | cut -d= -f2); "
        "test $mem -ge 8000 && echo $mem > {output}"

rule run_method_gpu:  # the workflow's GPU rule name, so the profile's settings for it apply
    output: "gpu.txt"
    threads: 2
    resources: gpu=1
    shell: "echo $SLURM_JOB_PARTITION > {output}"
"""


def test_profile_retries_with_more_memory_and_requests_gpus(cluster, tmp_path):
    """The profile itself: retries grow mem_mb with `attempt`; a gpu=1 rule asks --gpus=1 --cpus-per-gpu=threads."""
    (tmp_path / "profiles" / "slurm").mkdir(parents=True)
    shutil.copy(ROOT / "profiles" / "slurm" / "config.yaml", tmp_path / "profiles" / "slurm" / "config.yaml")
    (tmp_path / "Snakefile").write_text(TOY)
    out = snakemake(tmp_path, "--workflow-profile", "profiles/slurm", timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-5000:]
    jobs = [(rule, scontrol(jobid)) for jobid, rule in submissions(log)]
    flaky = [job for rule, job in jobs if rule == "flaky"]
    assert [(j["JobState"], j["MinMemoryNode"]) for j in flaky] == [("FAILED", "4000M"), ("COMPLETED", "8000M")]
    assert (tmp_path / "flaky.txt").read_text().strip() == "8000"
    [gpu] = [job for rule, job in jobs if rule == "run_method_gpu"]
    assert gpu["JobState"] == "COMPLETED" and gpu["Partition"] == "gpu", gpu
    assert gpu["TresPerJob"] == "gres:gpu:1" and gpu["CpusPerTres"] == "gres:gpu:2", gpu
    assert gpu["MinMemoryNode"] == "16000M" and gpu["TimeLimit"] == "08:00:00", gpu
    assert (tmp_path / "gpu.txt").read_text().strip() == "gpu"
