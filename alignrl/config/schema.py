"""Typed, documented configuration of a training run. A recipe YAML maps one-to-one onto ``RunConfig``.

Every field has a default except the few a run cannot guess (the model and the training data). Sections:
``model``, ``data``, ``rollout``, ``algorithm``, ``reward``, ``trainer``, ``eval``, ``logging``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from alignrl.config.typed import ConfigError, build_dataclass, to_dict


@dataclass
class LoraConfig:
    """LoRA adapters through peft; an engine with its own weights receives the adapters as adapters (never merged)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"


@dataclass
class ModelConfig:
    path: str  # Hugging Face model folder or hub name of the starting (SFT/BC) policy
    reference: str | None = None  # frozen KL reference; None = the starting policy. Demo-KL points at a BC checkpoint
    # the reference's weights: "policy" = stored like the trainable weights, so the KL is exactly 0 at the start under
    # any mixed precision; "bfloat16" halves its memory at the cost of a small KL at step 1 on GPU
    reference_dtype: Literal["policy", "auto", "float32", "bfloat16", "float16"] = "policy"
    # auto: float32 trainable weights, bf16 frozen ones (reference, LoRA base) where the hardware has it
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    gradient_checkpointing: bool = False
    lora: LoraConfig | None = None
    trust_remote_code: bool = False
    attn_implementation: str | None = None  # e.g. "sdpa", "flash_attention_2"; None = transformers' choice


@dataclass
class NamedSection:
    """A ``{name: ..., <that entry's own settings>}`` section; subclasses say which registry gives the settings."""

    name: str = ""
    params: Any = None
    KEY: ClassVar[str] = ""
    DEFAULT: ClassVar[str] = ""

    @classmethod
    def settings_class(cls, name: str) -> type:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def from_mapping(cls, data: dict, key: str = "", source: str = "") -> Any:
        key = key or cls.KEY
        data = dict(data)
        name = data.pop("name", cls.DEFAULT)
        try:
            settings_cls = cls.settings_class(name)
        except KeyError as err:
            raise ConfigError(source, f"{key}.name", str(err.args[0])) from err
        return cls(name=name, params=build_dataclass(settings_cls, data, key, source))

    def to_mapping(self) -> dict:
        return {"name": self.name, **to_dict(self.params)}


@dataclass
class SamplerConfig(NamedSection):
    """``name`` picks a registered prompt sampler (``epoch``: seeded shuffle per epoch); other keys are its Params."""

    name: str = "epoch"
    KEY: ClassVar[str] = "data.sampler"
    DEFAULT: ClassVar[str] = "epoch"

    @classmethod
    def settings_class(cls, name: str) -> type:
        from alignrl.sampling import sampler_class

        return sampler_class(name).Params


@dataclass
class EngineConfig(NamedSection):
    """``name`` picks a registered rollout engine (``hf``: transformers generate); other keys are its settings."""

    name: str = "hf"
    KEY: ClassVar[str] = "rollout.engine"
    DEFAULT: ClassVar[str] = "hf"

    @classmethod
    def settings_class(cls, name: str) -> type:
        from alignrl.requirements import KNOWN
        from alignrl.rollout import engine_settings_class

        try:
            return engine_settings_class(name)
        except KeyError as err:  # an optional engine whose package is missing may not have registered itself
            package = KNOWN.get(name)
            if package is not None and not package.installed():
                raise KeyError(f"rollout engine '{name}' needs the package '{package.module}', which is not "
                               f"installed; install it with {package.advice()}") from err
            raise


@dataclass
class DataConfig:
    train: str  # JSON/JSONL/Parquet file, or a dataset name on the hub (with ``split``)
    split: str = "train"
    eval: str | None = None  # held-out prompts for periodic evaluation (same formats)
    eval_split: str = "test"
    prompt_field: str = "prompt"  # column with the prompt text (or a list of chat messages)
    answer_field: str | None = "answer"  # column with the gold answer, passed to rewards; None if there is none
    use_chat_template: bool = False  # wrap the prompt with the tokenizer's chat template
    system_prompt: str | None = None  # prepended as a system message when ``use_chat_template``
    instruction: str | None = None  # appended to each prompt (e.g. "Please reason step by step, ...")
    shuffle: bool = True  # reshuffle every epoch (seeded); read by the ``epoch`` sampler
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig.from_mapping({}))  # prompt order, stateful


@dataclass
class RolloutConfig:
    # registered rollout engine and its own settings, e.g. {name: hf, generation_batch_size: 64}; a bare name works
    engine: EngineConfig | str = field(default_factory=lambda: EngineConfig.from_mapping({}))
    prompts_per_step: int = 32  # prompts per optimiser step, over all ranks
    n: int = 8  # samples per prompt (the group size K)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)  # stop strings, kept in the completion
    weight_bucket_mb: float = 512.0  # weights pushed to an engine that does not share the learner's module, per bucket

    def __post_init__(self) -> None:
        if isinstance(self.engine, str):
            self.engine = EngineConfig.from_mapping({"name": self.engine})
        if not self.weight_bucket_mb > 0:
            raise ValueError("rollout.weight_bucket_mb must be > 0")
        if self.n < 1 or self.prompts_per_step < 1:
            raise ValueError("rollout.n and rollout.prompts_per_step must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("rollout.temperature must be >= 0 and rollout.top_p in (0, 1]")


@dataclass
class AlgorithmConfig:
    """``name`` picks a registered algorithm; the other keys are that algorithm's own ``Params``."""

    name: str = "grpo"
    params: Any = None

    @classmethod
    def from_mapping(cls, data: dict, key: str = "algorithm", source: str = "") -> "AlgorithmConfig":
        from alignrl.algorithms import algorithm_class  # registers the built-in algorithms

        data = dict(data)
        name = data.pop("name", "grpo")
        try:
            algo = algorithm_class(name)
        except KeyError as err:
            raise ConfigError(source, f"{key}.name", str(err.args[0])) from err
        return cls(name=name, params=build_dataclass(algo.Params, data, key, source))

    def to_mapping(self) -> dict:
        return {"name": self.name, **to_dict(self.params)}


@dataclass
class RewardFunctionConfig:
    name: str  # a registered reward ("math") or "package.module:function"
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for the function


@dataclass
class RewardConfig:
    functions: list[RewardFunctionConfig] = field(default_factory=lambda: [RewardFunctionConfig(name="math")])


@dataclass
class TrainerConfig:
    output_dir: str = "runs/alignrl"
    seed: int = 0
    max_steps: int = 100  # optimiser steps (one rollout batch each, times ``epochs_per_batch``)
    lr: float = 1e-6
    lr_scheduler: str = "constant_with_warmup"  # any transformers SchedulerType name (cosine, linear, ...)
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_betas: tuple[float, ...] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0  # 0 = no clipping
    micro_batch_size: int = 8  # sequences per forward/backward (rounded to whole groups); gradients accumulate
    epochs_per_batch: int = 1  # passes over each rollout batch (> 1 makes the clipped ratio matter)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 where supported, else no
    save_steps: int = 50  # checkpoint every N steps (0 = only at the end)
    save_total_limit: int = 2  # keep the last N checkpoints
    overwrite_output_dir: bool = False  # allow starting over in a folder that holds a finished run

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.micro_batch_size < 1 or self.epochs_per_batch < 1:
            raise ValueError("trainer.max_steps, micro_batch_size and epochs_per_batch must be at least 1")
        if self.save_total_limit < 1:
            raise ValueError("trainer.save_total_limit must be at least 1")


@dataclass
class EvalConfig:
    every_steps: int = 0  # evaluate on ``data.eval`` every N steps (0 = off; also runs at the end when set)
    max_prompts: int | None = None  # evaluate on the first N held-out prompts
    n: int = 1  # samples per prompt (pass@1 = mean over them)
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int | None = None  # None = rollout.max_new_tokens
    reward: str | None = None  # reward deciding correctness (> 0 = correct); None = the first training reward


@dataclass
class LoggingConfig:
    report_to: list[Literal["tensorboard", "wandb"]] = field(default_factory=list)  # metrics.jsonl is always written
    run_name: str | None = None
    progress_bar: bool = True
    log_completions: int = 2  # completions per step written to completions.jsonl (0 = none)


@dataclass
class RunConfig:
    model: ModelConfig
    data: DataConfig
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=lambda: AlgorithmConfig.from_mapping({}))
    reward: RewardConfig = field(default_factory=RewardConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
