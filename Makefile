# mtrl — make targets. Every target that needs the virtualenv builds it first, so on a fresh clone
# `make demo` or `make test` is the only command needed.
#
# GPU machines: install a CUDA build of torch instead of the pinned CPU one, e.g.
#   make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
RUN ?= runs/demo
ENV ?= HalfCheetahVel
DEVICE ?= auto
SEEDS ?= 0 1 2
WORKERS ?= 4

.PHONY: install test demo lint bench clean reproduce-toy reproduce-cheetah reproduce-cheetah-faithful reproduce-focal reproduce-iwpa reproduce-hcsac reproduce-fig4 table9 mutation planted-bugs

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/mtrl run --config configs/point_goal_arc.yaml --profile smoke --run-dir $(RUN) --workers 2 --threads 1
	$(BIN)/mtrl report $(RUN)

# MBML's claim checked on a CPU: the full pipeline on PointGoalArc (cpu profile) for 3 seeds, then one report.
# The seeds run at the same time, so both cores stay busy while one seed waits on the slowest unit of a stage;
# each seed logs to runs/toy_s<seed>.log. Rerunning resumes every seed where it stopped.
# $(call reproduce,NAME,CONFIG,OPTIONS[,COMMANDS[,THEN]]): the `cpu` profile of CONFIG for every seed at once on
# this machine (each seed runs `mtrl COMMAND` for each of COMMANDS, default `run`: every stage; then THEN, an mtrl
# command line run on the seed's run directory, e.g. a second evaluation), logs in runs/NAME_s<seed>.log, then
# one report over the seeds; rerunning resumes where a seed stopped.
define reproduce
	@mkdir -p runs; pids=""; \
	for seed in $(SEEDS); do \
	  echo "seed $$seed: runs/$(1)_s$$seed, log runs/$(1)_s$$seed.log"; \
	  (for command in $(or $(4),run); do \
	    $(BIN)/mtrl $$command --config $(2) --profile cpu --run-dir runs/$(1)_s$$seed --seed $$seed \
	      $(3) || exit 1; done $(if $(5),&& $(BIN)/mtrl $(5) --run-dir runs/$(1)_s$$seed)) \
	    > runs/$(1)_s$$seed.log 2>&1 & pids="$$pids $$!"; \
	done; \
	failed=0; for pid in $$pids; do wait $$pid || failed=1; done; \
	if [ $$failed = 1 ]; then tail -n 2 $(foreach seed,$(SEEDS),runs/$(1)_s$(seed).log); \
	  echo "reproduce-$(1): a seed failed (logs above); rerun to resume"; exit 1; fi
	$(BIN)/mtrl report $(foreach seed,$(SEEDS),runs/$(1)_s$(seed)) --out runs/$(1)_report
endef

reproduce-toy: $(STAMP)
	$(call reproduce,toy,configs/point_goal_arc.yaml,--workers 2 --threads 1)

# IWPA (seed 003) vs MBML's SAC-init vs SAC from scratch on PointGoalArc's test tasks (docs/results.md): the cpu
# profile with only the stages that figure needs (MBML without ablations or baselines, sac-init's random baseline).
IWPA_SET = --set 'adapt.variants=[both,value,behaviour,finetune]' --set 'distill.variants=[mbml]' \
	--set 'baselines.algos=[]' --set 'sac_init.baselines=[random]' --set evaluate.repeats=1
reproduce-iwpa: $(STAMP)
	$(call reproduce,iwpa,configs/point_goal_arc.yaml,--workers 2 --threads 1 $(IWPA_SET))

# HalfCheetahVel on 2 CPU cores: each seed one process, its 10 tasks trained as one task-batched model.
reproduce-cheetah: $(STAMP)
	$(call reproduce,cheetah,configs/half_cheetah_vel.yaml,--workers 1 --threads 1)

# One faithful HalfCheetahVel seed on 2 CPU cores (issue 33, docs/results_table9.md): the `faithful` profile's data
# and teachers at the official sizes (bf16), the multi-task stages to `evaluate`, the report, and the zero-action
# floor the multi-task policies are measured against. Resumes where it stopped.
reproduce-cheetah-faithful: $(STAMP)
	$(BIN)/mtrl run --config configs/half_cheetah_vel.yaml --profile faithful --run-dir runs/cheetah_faithful_s0 \
	  --seed 0 --until evaluate --workers 2 --threads 1
	$(BIN)/mtrl report runs/cheetah_faithful_s0 --out runs/cheetah_faithful_report
	$(BIN)/python scripts/task_agnostic_reference.py runs/cheetah_faithful_s0

# FOCAL's CPU check (issue 18): PointRobot, then SparsePointRobot, 3 seeds each (docs/results.md). Each seed runs
# to `evaluate` (Alg. 5, online context) and is then evaluated under FOCAL's offline meta-test as well.
FOCAL_OFFLINE_EVAL = evaluate --set evaluate.context=offline --threads 1
reproduce-focal: $(STAMP)
	$(call reproduce,focal_point_robot,configs/point_robot.yaml,--until evaluate --threads 1,,$(FOCAL_OFFLINE_EVAL))
	$(call reproduce,focal_sparse_point_robot,configs/sparse_point_robot.yaml,--until evaluate --threads 1,,$(FOCAL_OFFLINE_EVAL))

# Seed 004's Table 1 on 2 CPU cores: WalkerWalkRun, BC/CSAC/MT-BC/MTCSAC/HCSAC on the medium and medium-replay data
# (docs/results.md): per seed, SAC collection, the two dataset kinds and train-cql only (no MBML stages).
reproduce-hcsac: $(STAMP)
	$(call reproduce,hcsac,configs/walker_walk_run.yaml,--workers 1 --threads 1,collect datasets train-cql)

# MBML's Table 9 on 2 CPU cores (issue 33, docs/results_table9.md): per family, one seed of the paper profile's
# per-task SAC (collect, Table 9's interactions) and BCQ (the official max_timesteps), then the table beside Table 9.
# HalfCheetahVel: all 10 training tasks; UmazeGoal-M: all 10; AntDir: tasks 0-1 (200K interactions each). BCQ's
# updates run under bf16 (half the time; its learning curves stay within fp32's seed spread, docs/results_table9.md).
# Each command resumes where it stopped (checkpoints every 5K interactions or updates); the wall time of each stage
# is in the table (summed over workers).
TABLE9_RUN = --profile paper --seed 0 --until train-bcq \
	--set collect.checkpoint_every=5000 --set bcq.checkpoint_every=5000 --set bcq.precision=bf16
table9: $(STAMP)
	$(BIN)/mtrl run --config configs/half_cheetah_vel.yaml --run-dir runs/table9/half_cheetah_vel $(TABLE9_RUN) \
	  --workers 1 --threads 2
	$(BIN)/mtrl run --config configs/umaze_goal_m.yaml --run-dir runs/table9/umaze_goal_m $(TABLE9_RUN) \
	  --workers 1 --threads 2
	$(BIN)/mtrl run --config configs/ant_dir.yaml --run-dir runs/table9/ant_dir $(TABLE9_RUN) --tasks 0-1 \
	  --workers 2 --threads 1
	$(BIN)/python scripts/table9.py runs/table9/half_cheetah_vel runs/table9/umaze_goal_m runs/table9/ant_dir \
	  --out runs/table9/table9.md

# Paper scale for one distribution (default HalfCheetahVel) on a GPU box: make reproduce-fig4 ENV=AntDir DEVICE=cuda
FIG4_CONFIG = $(shell grep -l "^  family: $(ENV)$$" configs/*.yaml | head -n 1)
reproduce-fig4: $(STAMP)
	@test -n "$(FIG4_CONFIG)" || { echo "no config in configs/ for ENV=$(ENV)"; exit 2; }
	for seed in $(SEEDS); do \
	  $(BIN)/mtrl run --config $(FIG4_CONFIG) --profile paper --run-dir runs/fig4_$(ENV)_s$$seed --seed $$seed \
	    --device $(DEVICE) --workers $(WORKERS) || exit 1; \
	done
	$(BIN)/mtrl report $(foreach seed,$(SEEDS),runs/fig4_$(ENV)_s$(seed)) --out runs/fig4_$(ENV)_report

lint: $(STAMP)
	$(BIN)/ruff check mtrl tests benchmarks scripts

# Mutation testing with mutmut (slow: not part of `make test`; docs/mutation.md has the scores and the survivors).
#   make mutation MODULE=mtrl/algos/mbml.py      one module (default: every module scripts/mutation.py lists)
#   make mutation MODULE=... BASE=<commit>       the score of an older commit's code and tests (the "before")
# Results stay in .mutation/<module>/ (git-ignored); a rerun resumes there (FRESH=1 starts over: needed after
# changing tests, which mutmut does not notice).
MODULE ?=
BASE ?=
MUTMUT_SPEC ?= mutmut==3.8.1
mutation: $(STAMP)
	$(BIN)/pip install --quiet "$(MUTMUT_SPEC)"
	nice -n 10 $(BIN)/python scripts/mutation.py $(MODULE) $(if $(BASE),--base $(BASE)) $(if $(FRESH),--fresh) --show

# The one-line bugs of issue 23, planted one at a time: each must make its test fail (about a minute).
planted-bugs: $(STAMP)
	$(BIN)/python scripts/plant_bugs.py

bench: $(STAMP)
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) runs/demo .pytest_cache .ruff_cache .mutation MUJOCO_LOG.TXT *.egg-info
