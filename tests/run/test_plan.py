import pytest

from moebench.run import plan
from moebench.errors import UserError

from runner_support import load_test_config


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return load_test_config(tmp_path_factory.mktemp("cfg"))


def test_experiment_1_is_4_models_x_12_prompts_x_3_reps_plus_warmups(cfg):
    p = plan.expand(cfg, cfg.device("cpu"), "experiment_1_efficiency")
    exp = cfg.experiment("experiment_1_efficiency")
    assert len(p.measured) == 4 * 12 * 3
    warmups = [c for c in p.cells if c.is_warmup]
    assert len(warmups) == 4 * exp.warmup_runs
    assert len({c.cell_key for c in p.cells}) == len(p.cells)
    # each model's warm-ups come before its measured cells
    first = p.cells[0]
    assert first.is_warmup and first.model_id == p.models[0]


def test_physical_cores_and_threads_override(cfg):
    import psutil
    p = plan.expand(cfg, cfg.device("cpu"), "experiment_1_efficiency")
    assert {c.knobs.threads for c in p.cells} == {psutil.cpu_count(logical=False)}
    p = plan.expand(cfg, cfg.device("cpu"), "experiment_a_cpu_thread_sweep", threads_override=3)
    assert {c.knobs.threads for c in p.cells} == {3}
    assert len(p.measured) == 4 * 12 * 3


def test_thread_sweep_multiplies_cells(cfg):
    p = plan.expand(cfg, cfg.device("m2"), "experiment_a_cpu_thread_sweep")
    sweep = cfg.experiment("experiment_a_cpu_thread_sweep").sweep.threads
    assert len(p.measured) == 4 * 12 * 3 * len(sweep)
    assert {c.knobs.threads for c in p.cells} == set(sweep)


def test_smoke_reduction(cfg):
    smoke = cfg.experiments.smoke
    p = plan.expand(cfg, cfg.device("cpu"), "experiment_1_efficiency", smoke=True)
    assert {c.prompt_id for c in p.measured} == set(smoke.prompts)
    assert len(p.measured) == 4 * len(smoke.prompts) * smoke.repetitions
    assert len(p.cells) - len(p.measured) == 4 * smoke.warmup_runs
    assert {c.knobs.n_predict for c in p.cells} == {smoke.n_predict}
    p2 = plan.expand(cfg, cfg.device("cpu"), "experiment_2_sequence_length", smoke=True)
    sweep = cfg.experiment("experiment_2_sequence_length").sweep.n_predict
    assert {c.knobs.n_predict for c in p2.cells} == set(sweep[:smoke.sweep_values])


def test_only_models_and_unknown_model(cfg):
    p = plan.expand(cfg, cfg.device("cpu"), "experiment_1_efficiency", only_models=["gemma-2-2b-it-q4km"])
    assert p.models == ("gemma-2-2b-it-q4km",)
    with pytest.raises(UserError, match="only-models"):
        plan.expand(cfg, cfg.device("cpu"), "experiment_1_efficiency", only_models=["nope"])


def test_cell_keys_are_stable(cfg):
    a = plan.expand(cfg, cfg.device("cpu"), "experiment_1_efficiency", smoke=True)
    b = plan.expand(cfg, cfg.device("cpu"), "experiment_1_efficiency", smoke=True)
    assert [c.cell_key for c in a.cells] == [c.cell_key for c in b.cells]
    assert all(set(c.knobs.as_dict()) == {"threads", "n_predict", "ctx_size", "batch_size", "ubatch_size",
                                          "n_gpu_layers", "seed", "temperature", "ignore_eos"} for c in a.cells)


def test_interleaved_order_is_repetition_major_with_a_seeded_model_order(cfg):
    fixed = plan.expand(cfg, cfg.device("cpu"), "experiment_1_efficiency")
    a = plan.expand(cfg, cfg.device("cpu"), "experiment_1_efficiency", order="interleaved", seed=7)
    assert (a.order, a.seed, fixed.order, fixed.seed) == ("interleaved", 7, "fixed", None)
    assert sorted(c.cell_key for c in a.cells) == sorted(c.cell_key for c in fixed.cells)  # same cells, other order
    measured = [c for c in a.cells if not c.is_warmup]
    assert [c.repetition for c in measured] == sorted(c.repetition for c in measured)  # repetition-major
    per_rep = [tuple(dict.fromkeys(c.model_id for c in measured if c.repetition == rep)) for rep in range(3)]
    assert all(sorted(models) == sorted(fixed.models) for models in per_rep)
    assert len(set(per_rep)) > 1  # drawn anew each repetition (seed 7 draws three different orders)
    for model in fixed.models:  # a model's warm-ups come right before its first measured cell
        first = next(i for i, c in enumerate(a.cells) if c.model_id == model)
        warmups = cfg.experiment("experiment_1_efficiency").warmup_runs
        assert all(c.is_warmup for c in a.cells[first:first + warmups])
        assert not a.cells[first + warmups].is_warmup and a.cells[first + warmups].model_id == model
    # the same seed replays the order; another seed gives another
    again = plan.expand(cfg, cfg.device("cpu"), "experiment_1_efficiency", order="interleaved", seed=7)
    other = plan.expand(cfg, cfg.device("cpu"), "experiment_1_efficiency", order="interleaved", seed=8)
    assert [c.cell_key for c in again.cells] == [c.cell_key for c in a.cells] != [c.cell_key for c in other.cells]


def test_interleaved_sweeps_shuffle_model_and_knob_set_together(cfg):
    p = plan.expand(cfg, cfg.device("m2"), "experiment_a_cpu_thread_sweep", order="interleaved", seed=1)
    sweep = cfg.experiment("experiment_a_cpu_thread_sweep").sweep.threads
    rep0 = [(c.model_id, c.knobs.threads) for c in p.cells if not c.is_warmup and c.repetition == 0]
    assert len(dict.fromkeys(rep0)) == 4 * len(sweep)
    assert [(c.model_id, c.knobs.threads) for c in p.cells if c.is_warmup] == [
        (m, sweep[0]) for m in dict.fromkeys(m for m, _ in dict.fromkeys(rep0))]


def test_orders_refuse_bad_input(cfg):
    with pytest.raises(UserError, match="--order"):
        plan.expand(cfg, cfg.device("cpu"), "experiment_1_efficiency", order="random")
    with pytest.raises(UserError, match="seed"):
        plan.expand(cfg, cfg.device("cpu"), "experiment_1_efficiency", order="interleaved")
