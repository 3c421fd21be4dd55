"""Run configs: YAML `base:` chains, dotted overrides parsed as YAML, strict keys and types,
partial sections keeping defaults, dump/load round trip, mesh resolution."""

import textwrap

import pytest

from vital_jax.config.run_config import (
    ConfigError,
    MeshConfig,
    OptimConfig,
    RunConfig,
    dump_config,
    load_config,
)


def _write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def chain(tmp_path):
    """base.yaml <- mid.yaml (in a subfolder, `base` relative to itself) <- top.yaml."""
    _write(tmp_path / "base.yaml", """\
        name: base
        seed: 3
        rl:
          group_size: 8
          epsilon: 0.3
        data:
          token_buckets: [128, 256]
    """)
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "mid.yaml", """\
        base: ../base.yaml
        name: mid
        rl:
          group_size: 6
    """)
    return _write(tmp_path / "sub" / "top.yaml", """\
        base: mid.yaml
        stage: rl
        rl:
          beta: 0.04
    """)


def test_base_chain_merges_recursively(chain):
    cfg = load_config(chain)
    assert cfg.name == "mid"                       # mid overrides base
    assert cfg.seed == 3                           # only in base
    assert cfg.stage == "rl"                       # top
    assert cfg.rl.group_size == 6                  # mid over base, inside a section
    assert cfg.rl.epsilon == 0.3                   # base's key survives mid's partial rl section
    assert cfg.rl.beta == 0.04                     # top's key in the same section
    assert cfg.data.token_buckets == (128, 256)    # YAML list -> typed tuple
    assert cfg.rl.max_turns == RunConfig().rl.max_turns  # untouched keys keep the defaults


def test_overrides_are_parsed_as_yaml(chain):
    cfg = load_config(chain, [
        "rl.group_size=2",                # int
        "sft.optim.learning_rate=1e-6",   # YAML 1.1 reads 1e-6 as a string; must become a float
        "rl.use_tools=false",             # bool
        "data.vision_buckets=[64, 128]",  # list -> tuple
        "rl.epsilon_high=null",           # None for an optional
        "rl.aggregation=token_mean",      # plain string
        "rl.epsilon=1",                   # int accepted for a float field
        "mesh.data=-1",
    ])
    assert cfg.rl.group_size == 2 and type(cfg.rl.group_size) is int
    assert cfg.sft.optim.learning_rate == 1e-6 and type(cfg.sft.optim.learning_rate) is float
    assert cfg.rl.use_tools is False
    assert cfg.data.vision_buckets == (64, 128)
    assert cfg.rl.epsilon_high is None
    assert cfg.rl.aggregation == "token_mean"
    assert cfg.rl.epsilon == 1.0 and type(cfg.rl.epsilon) is float
    assert cfg.rl.beta == 0.04                     # the file's value where no override applies
    # an override on a key that the file never mentions, deep in a nested section
    assert load_config(None, ["rl.difficulty.enabled=true"]).rl.difficulty.enabled is True


def test_partial_section_keeps_defaults(tmp_path):
    f = _write(tmp_path / "c.yaml", """\
        sft:
          optim:
            learning_rate: 0.5
    """)
    cfg = load_config(f)
    default = RunConfig().sft.optim
    assert cfg.sft.optim.learning_rate == 0.5
    # the section default (warmup 10 for SFT), not the OptimConfig class default (0)
    assert cfg.sft.optim.warmup_steps == default.warmup_steps == 10 != OptimConfig().warmup_steps
    assert cfg.sft.optim.schedule == default.schedule
    assert cfg.sft.steps == RunConfig().sft.steps
    # same through an override
    cfg = load_config(None, ["rl.optim.learning_rate=0.25"])
    assert cfg.rl.optim.schedule == "constant" and cfg.rl.optim.learning_rate == 0.25


def test_unknown_key_in_file_names_dotted_key_and_file(tmp_path):
    f = _write(tmp_path / "bad.yaml", """\
        rl:
          difficulty:
            windw: 3
    """)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert "rl.difficulty.windw" in msg and str(f) in msg


def test_unknown_key_in_base_file_is_caught(tmp_path):
    _write(tmp_path / "base.yaml", "sft:\n  stepz: 3\n")
    top = _write(tmp_path / "top.yaml", "base: base.yaml\nname: x\n")
    with pytest.raises(ConfigError, match=r"sft\.stepz"):
        load_config(top)


@pytest.mark.parametrize("override, key", [
    ("rl.group_sise=4", "rl.group_sise"),
    ("nope=1", "nope"),
    ("model.vision.x=1", "model.vision"),    # a section that does not exist
])
def test_unknown_override_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert key in str(e.value)


@pytest.mark.parametrize("override, key", [
    ("rl.group_size=four", "rl.group_size"),
    ("rl.group_size=2.5", "rl.group_size"),
    ("rl.use_tools=3", "rl.use_tools"),
    ("sft.optim.learning_rate=fast", "sft.optim.learning_rate"),
    ("data.token_buckets=7", "data.token_buckets"),
    ("data.token_buckets=[1, x]", "data.token_buckets[1]"),
    ("name=[1]", "name"),
    ("rl=3", "rl"),                          # a scalar where a section belongs
    ("rl.steps=null", "rl.steps"),           # null only for Optional fields
])
def test_wrong_type_names_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert key in str(e.value)


def test_wrong_type_in_file_names_key_and_file(tmp_path):
    f = _write(tmp_path / "t.yaml", "checkpoint:\n  every: often\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert "checkpoint.every" in str(e.value) and str(f) in str(e.value)


def test_bad_override_syntax_and_bad_stage():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config(None, ["rl.group_size"])
    with pytest.raises(ConfigError, match="stage"):
        load_config(None, ["stage=pretrain"])


def test_base_loop_is_an_error(tmp_path):
    _write(tmp_path / "a.yaml", "base: b.yaml\n")
    _write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "a.yaml")


def test_dump_load_round_trip(tmp_path, chain):
    cfg = load_config(chain, ["sft.optim.learning_rate=3e-7", "rl.epsilon_high=0.28",
                              "data.image_files=[a.jsonl, b.jsonl]", "model.tokenizer=/x/tok",
                              "mesh.fsdp=2"])
    dump_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(tmp_path / "run" / "config.yaml")
    assert again == cfg
    assert again != RunConfig()   # the comparison is not vacuous
    # the default config round-trips too (tuples, None, nested defaults)
    dump_config(RunConfig(), tmp_path / "d.yaml")
    assert load_config(tmp_path / "d.yaml") == RunConfig()


@pytest.mark.parametrize("mesh, n, want", [
    ((-1, 1, 1), 8, (8, 1, 1)),
    ((2, -1, 2), 8, (2, 2, 2)),
    ((1, 4, -1), 8, (1, 4, 2)),
    ((2, 1, 4), 8, (2, 1, 4)),
    ((-1, 1, 1), 1, (1, 1, 1)),
])
def test_mesh_resolve(mesh, n, want):
    d, f, t = mesh
    assert MeshConfig(data=d, fsdp=f, tensor=t).resolve(n) == want


@pytest.mark.parametrize("mesh, n", [
    ((-1, -1, 1), 8),   # two fills
    ((3, -1, 1), 8),    # 3 does not divide 8
    ((2, 2, 1), 8),     # product 4 != 8
    ((2, 2, 4), 8),     # product 16 != 8
    ((0, -1, 1), 8),    # zero axis
    ((-2, 4, 1), 8),    # negative other than -1
])
def test_mesh_resolve_errors(mesh, n):
    d, f, t = mesh
    with pytest.raises(ConfigError, match="mesh"):
        MeshConfig(data=d, fsdp=f, tensor=t).resolve(n)


def test_mesh_from_overrides_resolves():
    cfg = load_config(None, ["mesh.data=2", "mesh.fsdp=-1", "mesh.tensor=2"])
    assert cfg.mesh.resolve(8) == (2, 2, 2)


def test_vital_train_missing_data_file_is_one_line(tmp_path, capsys):
    """A missing annotation file ends ``vital train`` with one line naming the file (exit 2),
    not a traceback."""
    from vital_jax.cli import main

    rc = main(["train", f"data.root={tmp_path}", f"out_dir={tmp_path / 'run'}", "sft.steps=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("vital train: error:") and "sft_tool.jsonl" in err[0]


@pytest.mark.parametrize("key", ["loss", "advantage", "kl_estimator", "aggregation"])
def test_unknown_registered_names_are_config_errors(key):
    """rl.loss=foo (and the other registry-named keys) fail when the config is read, naming the
    key and the known names."""
    with pytest.raises(ConfigError, match=rf"rl\.{key}: unknown .*'foo'; known: "):
        load_config(None, [f"rl.{key}=foo"])
    load_config(None, ["rl.loss=GSPO", "rl.advantage=grpo"])   # names are case-insensitive


def test_unknown_prompt_set_is_a_config_error():
    with pytest.raises(ConfigError, match=r"data\.vision\.prompt: 'foo' is not one of \['compact', 'vital'\]"):
        load_config(None, ["data.vision.prompt=foo"])
    assert load_config(None, ["data.vision.prompt=compact"]).data.vision.prompt == "compact"


@pytest.mark.parametrize("override, match", [
    ("model.attention=flash", r"model\.attention: unknown attention implementation 'flash'; known: auto, blockwise, cudnn, splash, xla"),
    ("model.decode_attention=paged", r"model\.decode_attention: unknown decode attention 'paged'; known: auto, xla, blockwise, gpu_decode, tpu_paged"),
    ("model.remat=some", r"model\.remat: 'some' is not one of 'none', 'full', 'dots'"),
    ("model.param_dtype=f33", r"model\.param_dtype: 'f33' is not a dtype"),
    ("sft.optim.schedule=step", r"sft\.optim\.schedule: 'step' is not one of"),
    ("rl.optim.schedule=step", r"rl\.optim\.schedule: 'step' is not one of"),
])
def test_enum_like_fields_are_checked_when_read(override, match):
    """Choice-valued keys fail when the config is read, naming the key (not at the first trace)."""
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])
    assert load_config(None, ["model.attention=blockwise", "model.remat=dots"]).model.attention == "blockwise"


def test_sections_are_pydantic_models_with_documented_fields():
    """The config is a pydantic model tree: choices are Literal types in its JSON schema, field
    docs are descriptions, sections are frozen, and a partial section keeps its own defaults."""
    from pydantic import BaseModel, ValidationError

    from vital_jax.config.run_config import RLConfig, RunConfig, replace

    schema = RunConfig.model_json_schema()
    assert schema["properties"]["stage"]["enum"] == ["sft", "rl"]
    assert schema["$defs"]["OptimConfig"]["properties"]["schedule"]["enum"] == ["constant", "cosine", "linear"]
    assert RLConfig.model_fields["cache_length"].description == "Context limit of one episode."
    cfg = load_config(None, ["sft.optim.schedule=linear"])
    assert isinstance(cfg.sft, BaseModel)
    assert (cfg.sft.optim.learning_rate, cfg.sft.optim.warmup_steps) == (1e-3, 10)   # SFT's defaults kept
    with pytest.raises(ValidationError):
        cfg.rl.steps = 3                                                          # frozen
    assert replace(cfg.rl, steps=3).steps == 3
    with pytest.raises(ConfigError, match=r"^loss: unknown policy loss 'nope'"):
        replace(cfg.rl, loss="nope")
