"""Run plumbing shared by the algorithm scripts, that nobody reads a script to learn.

`cli(Args, PRESETS)`, before anything is built: a --preset's values become the defaults (explicit flags still win;
a paper preset's old name `X` is answered with its new names, X_paper and X_release);
every field must be in its range (RANGES), the model known, wandb installed for --track; a fresh run never writes
into an existing run directory, --resume must name a complete checkpoint of the same experiment and inputs, and the
run directory has one owner (its lock, common/rundir.py). Bad input ends in one line on stderr (`fail`,
common/errors.py), exit status 1.

`Run(...)`, built on every rank once the policy, its optimizer and LR scheduler exist: resumes (weights, optimizer,
scheduler, RNG states, step, prompt order) or starts; deals out each step's prompts; logs metrics averaged over the
ranks (common/utils.Logger: JSONL, TensorBoard when installed, W&B with --track); saves checkpoints, and after
SIGTERM/SIGINT saves and exits 0 at the end of the step; evaluates on held-out GenEval prompts before and after
training; checks that DDP kept the ranks' parameters identical.
"""
from __future__ import annotations

import math
import os
import resource
import signal
import sys
from dataclasses import replace
from typing import Any, Callable, NamedTuple

import torch
import torch.distributed as dist
from tqdm import tqdm

from common import checkpoint, errors, evaluation, rundir
from common.cli import parse
from common.distributed import gathered
from common.convert_janus import deepseek_layout_message, is_deepseek_janus_dir
from common.errors import fail
from common.models import MODELS
from common.prompts import load_prompts
from common.utils import Logger, import_wandb, make_generator, save_image_grid


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# field -> (accepts the value?, what it accepts)
RANGES: dict[str, tuple[Callable, str]] = {
    "num_steps": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "prompts_per_step": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "group_size": (lambda v: _int(v) and v >= 2, "an integer >= 2 (advantages compare samples within a group)"),
    "num_inner_epochs": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "micro_batch_size": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = the whole rank batch)"),
    "sample_chunk": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = the whole batch)"),
    "lr": (lambda v: _num(v) and v > 0, "a number > 0"),
    "lr_decay_steps": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = --num-steps)"),
    "lr_warmup_ratio": (lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1) (0 = no warm-up)"),
    "lr_min_ratio": (lambda v: _num(v) and 0 <= v <= 1, "a number in [0, 1] (the cosine's floor / --lr)"),
    "weight_decay": (lambda v: _num(v) and v >= 0, "a number >= 0"),
    "adam_betas": (lambda v: len(v) == 2 and all(_num(b) and 0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    "max_grad_norm": (lambda v: _num(v) and v > 0, "a number > 0"),
    "clip_eps": (lambda v: _num(v) and v > 0, "a number > 0"),
    "beta": (lambda v: _num(v) and v >= 0, "a number >= 0 (0 = no KL term)"),
    "adv_eps": (lambda v: _num(v) and v > 0, "a number > 0 (a group of equal rewards has std 0)"),
    "cfg_scale": (lambda v: _num(v) and v >= 0, "a number >= 0 (1 = no guidance)"),
    "temperature": (lambda v: _num(v) and v >= 0, "a number >= 0 (0 = greedy)"),
    "top_k": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = all tokens)"),
    "top_p": (lambda v: _num(v) and 0 < v <= 1, "a number in (0, 1] (1 = off)"),
    "eval_samples": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = no evaluation)"),
    "eval_every": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = only before and after training)"),
    "image_every": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = never)"),
    "save_every": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = only at the end)"),
    "keep_last": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "stop_on_flat": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = never stop on a flat reward)"),
    "device": (lambda v: v in ("auto", "cpu", "cuda"), "auto, cpu or cuda"),
    "critical_frac": (lambda v: _num(v) and 0 < v <= 1 / 3, "a number in (0, 1/3] (three disjoint sets)"),
    "weight_clip": (lambda v: _num(v) and v > 0, "a number > 0"),
    "lambda_c": (lambda v: _num(v) and v >= 0, "a number >= 0"),
    "lambda_i": (lambda v: _num(v) and v >= 0, "a number >= 0"),
    "lambda_r": (lambda v: _num(v) and v >= 0, "a number >= 0"),
    "lora_rank": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = no LoRA: every weight trains)"),
    "lora_alpha": (lambda v: _num(v) and v > 0, "a number > 0"),
}


def check_args(args) -> str:
    """The first out-of-range field of `args` as one line ("" when all are valid)."""
    for name, value in vars(args).items():
        if name in RANGES:
            ok, accepts = RANGES[name]
            try:
                good = bool(ok(value))
            except TypeError:
                good = False
            if not good:
                return f"--{name.replace('_', '-')} {value!r}: must be {accepts}"
    if getattr(args, "reward_device", ""):
        from common.reward_names import placement_problem

        names = [getattr(args, "reward", "")] + list(getattr(args, "align_rewards", ())) + \
            [getattr(args, "quality_reward", "")] + list(getattr(args, "realism_rewards", ()))
        if problem := placement_problem(args.reward_device, names):
            return problem
    if getattr(args, "cpu_offload", False) and args.dist != "fsdp2":
        return "--cpu-offload: needs --dist fsdp2 (it offloads FSDP2's shards)"
    if getattr(args, "device", "auto") == "cuda" and not torch.cuda.is_available():
        return "--device cuda: no CUDA device is visible to torch (use --device cpu, or a CUDA build of torch)"
    return ""


def run_dir(args) -> str:
    """<out_dir>/<exp_name>_s<seed>: metrics, TensorBoard events, image grids and checkpoints of one run."""
    return os.path.join(args.out_dir, f"{args.exp_name}_s{args.seed}")


# what every --preset sets unless it says otherwise: a real experiment stops when its reward goes flat
PRESET_DEFAULTS = {"stop_on_flat": 20}


def preset_defaults(args_cls, presets: dict, name: str):
    """`args_cls`'s defaults with preset `name` applied, as --preset applies it (PRESET_DEFAULTS, then the preset's
    values; explicit flags are parsed on top of these)."""
    return replace(args_cls(), **{**PRESET_DEFAULTS, **presets[name]}, preset=name)


def cli(args_cls, presets: dict | None = None):
    """The command line parsed into `args_cls` and checked (see the module docstring); fails in one line.
    args.resume comes back resolved to the checkpoint's step directory; a resumed run's --exp-name and --out-dir,
    when not given, are the checkpoint's own run's (common/rundir.py). Rank 0 then owns the run directory (its lock).
    `--print-preset` prints the resolved experiment (common/experiment.py), and `--plan-memory NxGB` what one step of
    this run needs on each of N GPUs of GB GB and the flags that fit (common/memory.py); both exit 0 without building
    or writing anything."""
    if problem := renamed_preset(sys.argv[1:], presets or {}):
        fail(problem)
    show = "--print-preset" in sys.argv[1:]
    if show:
        sys.argv = [a for a in sys.argv if a != "--print-preset"]
    sys.argv, setup = take_flag(sys.argv, "--plan-memory")
    if setup is not None:
        from common.memory import parse_setup

        try:
            setup = parse_setup(setup)
        except ValueError as e:
            fail(str(e))
    args = parse(args_cls)
    if presets and args.preset != "toy":  # parse again with the preset's values as defaults, so explicit flags win
        args = parse(args_cls, default=preset_defaults(args_cls, presets, args.preset))
    errors.install(oom=_oom_advice(args))
    if problem := check_args(args) or rundir.name_problem(args.exp_name):
        fail(problem)
    if show:
        from common.experiment import describe, explicit_fields

        print(describe(args, (presets or {}).get(args.preset, {}), explicit_fields(args_cls, sys.argv[1:])))
    if setup is not None:
        plan_memory(args_cls, args, *setup)
    if show or setup is not None:
        sys.exit(0)
    if args.model not in MODELS and not os.path.isdir(args.model):
        fail(f"unknown model {args.model!r}; known: {', '.join(MODELS)} or a weights directory")
    if os.path.isdir(args.model) and is_deepseek_janus_dir(args.model):  # before the run directory is made
        fail(deepseek_layout_message(args.model))
    parent, master = None, int(os.environ.get("RANK", "0")) == 0
    try:
        if args.track:
            import_wandb()
        if args.resume:  # a complete checkpoint, trained with the same experiment-defining arguments and inputs
            args.resume = checkpoint.resolve(args.resume, args)
            args.exp_name, args.out_dir, parent = rundir.resume_target(args.resume, args.exp_name, args.out_dir,
                                                                       args.seed)
    except (ImportError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    # the run directory can be written (not a file, not read-only), before any model is built
    errors.check_writable(run_dir(args), f"--out-dir {args.out_dir}: cannot write the run directory {run_dir(args)}")
    if master:  # one owner for the whole run (under torchrun, rank 0 holds the lock for its job); never mix two runs
        try:
            rundir.acquire(run_dir(args))
        except RuntimeError as e:
            fail(str(e))
        if not args.resume and rundir.holds_run(run_dir(args)):
            fail(f"{run_dir(args)} already holds a run: continue it with --resume {run_dir(args)}, or start another "
                 f"with a new --exp-name, --seed or --out-dir")
        rundir.identify(run_dir(args), new=parent is not None or not args.resume, parent=parent)
    stop_on_disk_errors(run_dir(args), oom=_oom_advice(args))
    return args


def take_flag(argv: list[str], flag: str) -> tuple[list[str], str | None]:
    """argv without `flag VALUE` (or `flag=VALUE`), and VALUE: None when the flag is absent; fails in one line when
    it has no value."""
    rest, value, i = [], None, 0
    while i < len(argv):
        if argv[i] == flag:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                fail(f"{flag}: needs a value (e.g. {flag} 8x80)")
            value, i = argv[i + 1], i + 2
            continue
        if argv[i].startswith(flag + "="):
            value = argv[i].split("=", 1)[1]
        else:
            rest.append(argv[i])
        i += 1
    return rest, value


def plan_memory(args_cls, args, gpus: int, gpu_gb: float):
    """--plan-memory: print the memory planner's answer for this run, as resolved from its preset and flags, on
    `gpus` GPUs of `gpu_gb` GB (common/memory.py; the model is built on the meta device: no weights, no GPU)."""
    from common.memory import report

    if args.model not in MODELS:
        what = "a weights directory" if os.path.isdir(args.model) else "an unknown model"
        fail(f"--plan-memory: --model {args.model} is {what}; the planner builds a named architecture on the meta "
             f"device: pass --model with its name ({', '.join(MODELS)})")
    module = sys.modules.get(args_cls.__module__)
    script = os.path.splitext(os.path.basename(getattr(module, "__file__", None) or sys.argv[0]))[0]
    print(report(script, args, gpus, gpu_gb), flush=True)


def renamed_preset(argv: list[str], presets: dict) -> str:
    """One line for a --preset given by its old name, where the paper's experiment is now `<name>_paper` beside the
    release's `<name>_release` ("" otherwise; tyro answers any other unknown name)."""
    for flag, value in zip(argv, argv[1:] + [""]):
        name = flag.split("=", 1)[1] if flag.startswith("--preset=") else value if flag == "--preset" else ""
        if name and name not in presets and f"{name}_paper" in presets:
            release = f" or {name}_release (the release's script)" if f"{name}_release" in presets else ""
            return f"--preset {name}: renamed; use {name}_paper (the paper's settings){release}"
    return ""


def _oom_advice(args) -> Callable[[int | None], str]:
    """After an allocator error: the group size that fits the memory available now (activations scale with the
    P x G images of a step), and the flags that bound memory without changing the experiment."""
    def advice(asked: int | None) -> str:
        G, free = getattr(args, "group_size", 0), errors.available_bytes()
        fits = ""
        if G and asked and free and asked > free:
            fits = f"--group-size {max(2, int(G * free / asked / 2))} would fit (now {G}); or "
        return (f"{fits}lower --prompts-per-step, or bound memory with --sample-chunk and --micro-batch-size "
                f"(now {getattr(args, 'sample_chunk', 0)} and {getattr(args, 'micro_batch_size', 0)}, 0 = whole batch)")

    return advice


def stop_on_disk_errors(directory: str, oom=None):
    """Answer an uncaught disk error (a full disk mid-run, a volume gone read-only) with one line on stderr naming
    the run directory and how to continue, exit status 1 (common/errors.py, with the other one-line answers).
    Checkpoints are written atomically (common/checkpoint.py), so the newest complete one is intact and --resume
    continues from it."""
    def then() -> str:
        try:
            return f"continue with --resume {checkpoint.resolve(directory)}"
        except (FileNotFoundError, ValueError):  # no complete checkpoint yet
            return f"start again (remove {directory} first)"

    errors.install(directory, resume=then, oom=oom, interrupted=then)


def reward_name(args) -> str:
    """The reward a run trains on, as its flags name it (AR-GRPO: its terms, joined with +)."""
    if hasattr(args, "reward"):
        return args.reward
    terms = [*getattr(args, "align_rewards", ()), getattr(args, "quality_reward", ""),
             *getattr(args, "realism_rewards", ())]
    return "+".join(t for t in terms if t)


class HeldOut(NamedTuple):
    """The before/after evaluation: held-out GenEval prompts ([] = none) and the judge that scores them (an object
    with validate(metadata) and evaluate(images, metadata), see common/evaluation.py)."""
    prompts: list[dict]
    judge: Any


def load_eval_prompts(args, judge) -> HeldOut:
    """The held-out GenEval prompts of the before/after evaluation ([] = none), checked by `judge` (the script builds it
    for --eval-detector: rewards.geneval.GenEvalJudge). Raises ValueError or FileNotFoundError in one line."""
    prompts = load_prompts(args.eval_prompts) if args.eval_prompts and args.eval_samples > 0 else []
    if prompts:
        judge.validate(prompts)
    return HeldOut(prompts, judge)


class Run:
    """A run's life around the algorithm (see the module docstring). Collective: build it and call every method on
    every rank. bk: the model backend (bk.policy: the module the optimizer was built on, plain or FSDP2-sharded);
    held_out: load_eval_prompts's prompts and judge; amp: the script's autocast context for the evaluation's sampler."""

    def __init__(self, args, bk, optimizer, scheduler, train_prompts: list[dict], held_out: HeldOut, amp):
        self.args, self.bk, self.optimizer, self.scheduler, self.amp = args, bk, optimizer, scheduler, amp
        self.prompts, (self.eval_prompts, self.judge) = train_prompts, held_out
        self.ddp = dist.is_initialized()
        self.rank, self.world_size = (dist.get_rank(), dist.get_world_size()) if self.ddp else (0, 1)
        self.master, self.dir, self.device = self.rank == 0, run_dir(args), bk.device
        self.last_ckpt = args.resume or None  # the newest complete checkpoint, named when a step fails
        self.order_gen = make_generator(args.seed)  # prompt order: identical on every rank
        self.perm, self.cursor, self.start_step = torch.randperm(len(train_prompts), generator=self.order_gen), 0, 0
        if args.resume:  # policy, optimizer, scheduler, RNG of every rank, step and prompt order
            try:
                state = checkpoint.load(args.resume, bk.policy, optimizer, scheduler)
            except (ValueError, RuntimeError, OSError, KeyError) as e:
                fail(f"--resume {args.resume}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            self.start_step, self.perm, self.cursor = state["step"], state["perm"], state["cursor"]
            self.order_gen.set_state(state["order_gen"])
            if len(self.perm) != len(train_prompts):  # --allow-changed-prompts with another number of prompts
                self.perm, self.cursor = torch.randperm(len(train_prompts), generator=self.order_gen), 0
        self.logger = Logger(self.dir, vars(args), enabled=self.master, resume_step=self.start_step,
                             wandb_project=args.wandb_project if args.track else None)
        self.before, self.after, self.stop_signal = None, None, []
        self.flat_steps, self.last_rewards = 0, []  # --stop-on-flat: steps in a row whose groups were all flat
        signal.signal(signal.SIGTERM, self._on_signal)  # schedulers' preemption or Ctrl-C: finish the step, save,
        signal.signal(signal.SIGINT, self._on_signal)  # exit cleanly
        if self.master:
            P_rank, G = args.prompts_per_step // self.world_size, args.group_size
            n_params = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
            n_policy = sum(p.numel() for p in bk.policy.parameters())
            print(f"{len(train_prompts)} prompts | {self.world_size} rank(s) x {P_rank} prompts x G={G} "
                  f"= {args.prompts_per_step * G} images/step | {bk.num_tokens} tokens/image | "
                  f"{n_params / 1e6:.3g}M trainable params ({100 * n_params / n_policy:.3g}% of the policy) | "
                  f"out: {self.dir}"
                  + (f" | resumed at step {self.start_step}" if args.resume else ""))

    def _on_signal(self, signum, frame):
        self.stop_signal.append(signum)
        signal.signal(signum, signal.SIG_DFL)  # a second signal kills at once

    def steps(self):
        """The steps still to run, start_step + 1 .. num_steps, with a progress bar on rank 0."""
        return tqdm(range(self.start_step + 1, self.args.num_steps + 1), disable=not self.master,
                    desc=self.args.exp_name)

    def next_prompts(self) -> tuple[list[dict], list[int]]:
        """The next P prompts of a shuffled epoch (a new epoch when fewer than P are left); rank r takes its
        contiguous share. -> (this rank's P / world_size prompts, their global group indices)."""
        P, P_rank = self.args.prompts_per_step, self.args.prompts_per_step // self.world_size
        if self.cursor + P > len(self.perm):
            self.perm, self.cursor = torch.randperm(len(self.prompts), generator=self.order_gen), 0
        group_ids = list(range(self.cursor + self.rank * P_rank, self.cursor + (self.rank + 1) * P_rank))
        idx = self.perm[group_ids[0] : group_ids[-1] + 1]
        self.cursor += P
        return [self.prompts[i] for i in idx.tolist()], group_ids

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, ...) of every rank, concatenated in rank order (x itself on one process)."""
        if not self.ddp:
            return x
        every = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(every, x)
        return torch.cat(every)

    def log(self, step: int, metrics: dict, images=None, rewards=None, texts=None) -> dict:
        """Average the scalar `metrics` over the ranks, add the peak memory and log them (rank 0 writes). After the
        last step and every --eval-every steps, the held-out evaluation joins the row as eval/<tag> and
        eval/overall. Every --image-every steps, also a grid of rank 0's rollouts `images` captioned with their
        rewards and prompts. -> the logged metrics."""
        if self.ddp:
            vec = torch.tensor(list(metrics.values()), device=self.device)
            dist.all_reduce(vec, op=dist.ReduceOp.SUM)
            metrics = {k: v / self.world_size for k, v in zip(metrics, vec.tolist())}  # images/s: already global
        metrics["perf/peak_mem_gb"] = (torch.cuda.max_memory_allocated() if self.device.type == "cuda" else
                                       resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30
        every = getattr(self.args, "eval_every", 0)
        if step == self.args.num_steps or (every and step % every == 0):  # held-out score in the step's row
            summary = self.evaluate("after" if step == self.args.num_steps else f"step {step}")
            metrics.update({f"eval/{k}": v for k, v in (summary or {}).items()})
        self.logger.log(step, metrics)
        if rewards is not None:
            self.last_rewards = rewards[:8].tolist()
        self.flat_steps = self.flat_steps + 1 if metrics.get("charts/frac_zero_std_groups", 0) >= 1 else 0
        if self.master and images is not None and self.args.image_every and step % self.args.image_every == 0:
            caps = [f"{r:.2f} {t}" for r, t in zip(rewards.tolist(), texts)]
            grid = save_image_grid(images[:32].float().cpu(), caps[:32],
                                   os.path.join(self.dir, f"rollouts_{step:05d}.png"))
            self.logger.log_image(step, "images/rollouts", grid, f"step {step}: rank 0's first rollouts, captioned "
                                  f"with reward and prompt (reward mean {rewards.mean().item():.3f})")
        return metrics

    def maybe_save(self, step: int, metrics: dict):
        """End of a step: a resumable checkpoint (common/checkpoint.py; the newest --keep-last are kept) every
        --save-every steps and after the last. After SIGTERM/SIGINT on any rank, every rank saves and exits 0.
        After --stop-on-flat K steps in a row whose groups all had equal rewards (every advantage 0: nothing is
        learned, as when a reward silently returns a constant), every rank saves and the run stops, exit status 1."""
        local = [p.to_local() if hasattr(p, "to_local") else p for p in self.bk.policy.parameters()]  # FSDP2: shards
        diverged = not all(bool(torch.isfinite(p).all()) for p in local)
        flags = torch.tensor([float(bool(self.stop_signal)), float(diverged)], device=self.device)
        if self.ddp:  # every rank stops at the same step, even if only one received the signal
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        stop, diverged = flags.tolist()
        if diverged:  # never save (nor resume from) a diverged policy
            fail(f"the policy's weights are non-finite after step {step} (not saved); last good checkpoint: "
                 f"{self.last_ckpt or 'none'}; resume from it with a lower --lr")
        K = getattr(self.args, "stop_on_flat", 0)
        flat = bool(K) and self.flat_steps >= K  # the same on every rank: the fraction is averaged over ranks
        if flat or stop or step == self.args.num_steps or (self.args.save_every and step % self.args.save_every == 0):
            train_state = {"perm": self.perm, "cursor": self.cursor, "order_gen": self.order_gen.get_state()}
            self.last_ckpt = checkpoint.save(os.path.join(self.dir, "checkpoints"), step, self.bk.policy,
                                             self.optimizer, self.scheduler, train_state, self.args, metrics,
                                             self.args.keep_last)
        if flat:
            seen = ", ".join(f"{r:.4g}" for r in self.last_rewards)
            msg = (f"reward {reward_name(self.args)!r} was flat for {K} steps in a row (every group's images scored "
                   f"alike, so every advantage is 0): last rewards seen [{seen}]; check the reward (its weights, its "
                   f"prompts' metadata) before resuming from {self.last_ckpt} (or pass --stop-on-flat 0)")
            if self.ddp and self.master:
                sys.stderr.write(f"error: {msg}\n")
            self.close(status=1)  # under torchrun: leaves the process here
            fail(msg)
        if stop:
            if self.master:
                print(f"stopped by a signal after step {step}; continue with --resume {self.last_ckpt}")
            self.close()
            sys.exit(0)

    def evaluate(self, tag: str) -> dict | None:
        """Strict GenEval on the held-out prompts (every rank samples and scores its share); rank 0 prints the
        summary, saves eval_<tag>.png for "before" and "after", and logs "before" as the row of step 0.
        None without held-out prompts, and for "before" when resuming."""
        if not self.eval_prompts or (tag == "before" and self.args.resume):
            return None
        a = self.args
        with gathered(self.bk.policy), self.amp():  # FSDP2: whole parameters for the sampler
            summary, images, captions = evaluation.geneval_eval(
                self.bk, self.eval_prompts, self.judge, a.eval_samples, cfg_scale=a.cfg_scale,
                temperature=a.temperature, top_k=a.top_k, top_p=a.top_p, rank=self.rank, world_size=self.world_size)
        if self.master:
            if tag in ("before", "after"):
                grid = save_image_grid(images[:64], captions[:64], os.path.join(self.dir, f"eval_{tag}.png"))
                step = 0 if tag == "before" else self.args.num_steps
                self.logger.log_image(step, f"images/eval_{tag}", grid, f"held-out samples {tag} training, captioned "
                                      f"OK/x by strict GenEval; overall {summary['overall']:.3f}")
            print(f"held-out strict GenEval ({tag}): " + " | ".join(f"{k} {v:.3f}" for k, v in summary.items()))
        if tag == "after":
            self.after = summary
        if tag == "before":
            self.before = summary
            self.logger.log(0, {f"eval/{k}": v for k, v in summary.items()})
        return summary

    def finish(self):
        """After the last step: DDP's sanity check (every rank's parameters identical to rank 0's), the held-out
        score after training (evaluated with the last step's row) next to the one before, then close the logs and
        the process group."""
        if self.ddp and self.args.dist != "fsdp2":
            flat = torch.cat([p.detach().flatten() for p in self.bk.policy.parameters()])
            flat0 = flat.clone()
            dist.broadcast(flat0, src=0)
            if not torch.equal(flat, flat0):
                fail(f"rank {self.rank} parameters differ from rank 0")
            if self.master:
                print(f"parameters identical on all {self.world_size} ranks")
        if self.master and self.before is not None and self.after is not None:
            print(f"held-out strict GenEval overall: before {self.before['overall']:.3f} -> after "
                  f"{self.after['overall']:.3f}")
        self.close()

    def close(self, status: int = 0):
        """Close the logs; under torchrun also the process group, and then leave the process at once: with gloo,
        a process that ran DDP aborts now and then while the interpreter tears down ("terminate called without
        an active exception", status -6, after all its work is done), which torchrun reports as a failed run.
        Everything is written and closed by then, so os._exit skips only that teardown."""
        self.logger.close()
        rundir.release()
        if self.ddp:
            dist.destroy_process_group()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
