"""segment_node's parameters: declared from ``config/schema/segment.schema.json``, validated at start.

The schema is the one description of every parameter (type, default, description, range, whether
``ros2 param set`` may change it while running); the choices of ``backend`` and ``precision`` come
from ``inference.registry``. Validation lists every problem at once, so a bad launch is fixed in one
go. Only ``declare``/``describe_ranges`` touch rclpy; the rest works on plain dictionaries.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from clip2scene_ros.inference import registry

_CHOICES = {
    "clip2scene_ros.inference.registry.BACKENDS": registry.BACKENDS,
    "clip2scene_ros.inference.registry.PRECISIONS": registry.PRECISIONS,
}
_INT_MAX = 2**31 - 1
# old parameter name -> current name
RENAMED = {"use_tf_static": "use_tf"}


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str  # JSON schema type: string | integer | number | boolean | array
    default: Any
    description: str
    runtime: bool  # `ros2 param set` applies it to the running node
    enum: tuple[str, ...] = ()
    minimum: float | None = None
    exclusive_minimum: float | None = None

    def describe(self) -> str:
        """Description with the allowed values, as ``ros2 param describe`` shows it."""
        extra = []
        if self.enum:
            extra.append("one of: " + " | ".join(self.enum))
        if self.minimum is not None:
            extra.append(f">= {self.minimum:g}")
        if self.exclusive_minimum is not None:
            extra.append(f"> {self.exclusive_minimum:g}")
        if not self.runtime:
            extra.append("read at start")
        return self.description + (f" ({'; '.join(extra)})" if extra else "")


def schema_path() -> Path:
    from clip2scene_ros.resources import config_path

    return config_path("schema", "segment.schema.json")


@lru_cache(maxsize=1)
def schema() -> dict:
    """The parameter schema with the registry's choices filled in as ``enum``."""
    data = json.loads(schema_path().read_text())
    for prop in data["definitions"]["segment_node"]["properties"].values():
        if "x-choices" in prop:
            prop["enum"] = list(_CHOICES[prop["x-choices"]])
    return data


@lru_cache(maxsize=1)
def specs() -> dict[str, ParamSpec]:
    out = {}
    for name, prop in schema()["definitions"]["segment_node"]["properties"].items():
        out[name] = ParamSpec(
            name=name,
            type=prop["type"],
            default=prop["default"],
            description=prop.get("description", ""),
            runtime=bool(prop.get("x-runtime", False)),
            enum=tuple(prop.get("enum", ())),
            minimum=prop.get("minimum"),
            exclusive_minimum=prop.get("exclusiveMinimum"),
        )
    return out


def clean(name: str, value: Any) -> Any:
    """Arrays drop blank entries ([""] reads as empty); other values pass through."""
    if specs()[name].type == "array":
        return [v for v in (value or []) if str(v).strip()]
    return value


def default_checkpoint() -> Path:
    """Where the shipped default student lives."""
    return Path(__file__).resolve().parent.parent / "assets" / "student"


def checkpoint_of(p: Mapping[str, Any]) -> str:
    return p["checkpoint"] or str(default_checkpoint())


def schema_errors(p: Mapping[str, Any]) -> list[str]:
    """Problems of the values ``p`` against the schema (type, choices, ranges), one line each."""
    import jsonschema

    definition = schema()["definitions"]["segment_node"]
    sub = {"type": "object", "properties": definition["properties"]}
    errors = []
    for err in jsonschema.Draft7Validator(sub).iter_errors(dict(p)):
        name = str(err.path[0]) if err.path else "?"
        value = p.get(name)
        rule = err.validator
        if rule == "enum":
            errors.append(f"{name}='{value}' must be one of: {', '.join(err.validator_value)}")
        elif rule == "minimum":
            errors.append(f"{name}={value} must be >= {err.validator_value}")
        elif rule == "exclusiveMinimum":
            errors.append(f"{name}={value} must be > {err.validator_value}")
        elif rule == "type":
            errors.append(f"{name}={value!r} must be of type {err.validator_value}")
        else:
            errors.append(f"{name}: {err.message}")
    return errors


def validate(p: Mapping[str, Any]) -> list[str]:
    """Every problem of a full parameter set (schema + relations between parameters + files)."""
    from clip2scene_ros.inference.segmenter import load_vocabulary

    errors = schema_errors(p)
    if len(set(p["cameras"])) != len(p["cameras"]):
        errors.append(f"cameras={p['cameras']} must be distinct, non-empty names")
    for name in ("camera_image_topic", "camera_info_topic"):
        if p["cameras"] and "{name}" not in p[name]:
            errors.append(f"{name}='{p[name]}' must contain '{{name}}' (replaced by each camera name)")
    device = registry.device_error(p["device"])
    if device:
        errors.append(device)
    if p["sync.policy"] == "approximate_time":
        try:
            import message_filters  # noqa: F401
        except ImportError:
            errors.append("sync.policy=approximate_time needs message_filters, which is not installed; "
                          "use sync.policy=lidar_master")  # fmt: skip
    if p["base_frame"] and not (p["use_tf"] or p["lidar_pose"]):
        errors.append(f"base_frame='{p['base_frame']}' is read from TF: set use_tf=true (or lidar_pose without TF)")
    if p["fusion"] and not p["cameras"]:
        errors.append("fusion=true needs at least one camera in 'cameras'")
    ckpt = checkpoint_of(p)
    if not Path(ckpt).expanduser().is_dir():
        errors.append(
            f"checkpoint '{ckpt}' is not a directory"
            + ("" if p["checkpoint"] else " (no shipped default yet)")
            + "; pass a checkpoint directory: -p checkpoint:=/path/to/ckpt (clip2scene segment --checkpoint DIR)"
        )
    try:
        load_vocabulary(p["vocabulary_classes"] or p["vocabulary"])
    except (ValueError, FileNotFoundError) as e:
        errors.append(f"vocabulary: {e}")
    if not errors:  # the segmenter's own checks repeat the ones above in other words
        try:
            segmenter_config(p).validate()
        except ValueError as e:
            errors += [line.strip(" -") for line in str(e).splitlines()[1:]]
    return list(dict.fromkeys(errors))


def base_frame_of(p: Mapping[str, Any], model_frame: str) -> tuple[str, str]:
    """(frame clouds are brought into from TF, "" = none; a note for the start-up log).

    ``lidar_pose`` wins; else ``base_frame``; else the model's own frame when it is the REP-103 base,
    so a base_link model works with any robot that publishes TF without a parameter.
    """
    from clip2scene_ros.geometry.frames import BASE

    if p["lidar_pose"] or p["base_frame"]:
        return ("" if p["lidar_pose"] else p["base_frame"]), ""
    if model_frame != BASE:
        return "", ""
    if not p["use_tf"]:
        return "", f"the model works in {BASE}; use_tf is false and lidar_pose empty: clouds are taken to be in it"
    return BASE, f"the model works in {BASE}: clouds are brought into it from TF (base_frame, lidar_pose change that)"


def sim_lidar_params(checkpoint: str | None = None) -> list[str]:
    """``NAME:=VALUE`` node parameters for clouds of the simulator's LiDAR sent without TF (benchmarks):
    its mounting as ``lidar_pose`` when the checkpoint works in base_link, none otherwise."""
    from clip2scene_ros.geometry.frames import BASE, SIM_LIDAR_TOP_POSE
    from clip2scene_ros.models.inputs import InputSpec

    if InputSpec.from_checkpoint(checkpoint or default_checkpoint()).frame.name != BASE:
        return []
    return ["lidar_pose:=" + " ".join(f"{v:.9g}" for v in SIM_LIDAR_TOP_POSE)]


def parse_pose(text: str) -> list[float]:
    """'x y z roll pitch yaw' -> 6 floats ([] for ''); a word that is no number becomes NaN, which
    the segmenter's validation reports with the expected form."""
    out = []
    for word in text.replace(",", " ").split():
        try:
            out.append(float(word))
        except ValueError:
            out.append(float("nan"))
    return out


def segmenter_config(p: Mapping[str, Any]):  # noqa: ANN201 - SegmenterConfig (imported lazily)
    from clip2scene_ros.inference.segmenter import SegmenterConfig

    return SegmenterConfig(
        checkpoint=checkpoint_of(p),
        vocabulary=list(p["vocabulary_classes"]) or p["vocabulary"],
        teacher=p["teacher"] or None,
        backend=p["backend"],
        device=p["device"],
        precision=p["precision"],
        head=p["head"],
        max_points=p["max_points"],
        range_min=p["range_min"],
        range_max=p["range_max"],
        fusion=p["fusion"],
        fusion_weight=p["fusion_weight"],
        voxel_size=p["voxel_size"],
        lidar_pose=parse_pose(p["lidar_pose"]),
        point_features=list(p["point_features"]),
        intensity_scale=p["intensity_scale"],
        threads=p["num_threads"],
        text_cache_dir=p["query.text_cache_dir"],
        text_cache_entries=p["query.text_cache_entries"],
        text_cache_disk_mb=p["query.text_cache_disk_mb"],
        new_phrases_per_s=p["query.new_phrases_per_s"],
        new_phrases_burst=p["query.new_phrases_burst"],
        text_encode_share=p["query.text_encode_share"],
    )


# ---- rclpy side --------------------------------------------------------------------------------


def declare(node: Any) -> dict[str, Any]:
    """Declare every parameter on ``node`` and return the values it starts with."""
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.exceptions import ParameterUninitializedException
    from rclpy.parameter import Parameter

    values = {}
    for name, spec in specs().items():
        # An empty list has no type in rclpy (it becomes a byte array), so arrays are declared by
        # type; left unset (or `[]` in YAML) they stay uninitialised and read as [].
        initial = Parameter.Type.STRING_ARRAY if spec.type == "array" else spec.default
        node.declare_parameter(name, initial, ParameterDescriptor(description=spec.describe()))
        try:
            values[name] = clean(name, node.get_parameter(name).value)
        except ParameterUninitializedException:
            values[name] = []
    for old, new in RENAMED.items():
        # declared untyped and unset, so only a launch file or params file that still uses the
        # old name gives it a value; that value is honoured under the new name, with a warning
        desc = ParameterDescriptor(description=f"renamed to {new}; still honoured, with a warning", dynamic_typing=True)
        value = node.declare_parameter(old, None, desc).value
        if value is not None:
            node.get_logger().warning(f"parameter '{old}' was renamed to '{new}': taking {new}={value!r}; "
                                      f"please rename it in your launch or params file")  # fmt: skip
            values[new] = clean(new, value)
    return values


def qos(reliability: str, depth: int, latched: bool = False) -> Any:
    """A QoSProfile from the ``*.reliability`` / depth parameters (latched = transient local)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort" else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


def describe_ranges(node: Any) -> None:
    """Attach the schema's ranges to the declared parameters (seen by ``ros2 param describe``).

    Done after validation so that an out-of-range value is reported with all other problems
    instead of failing the first declaration.
    """
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange

    for name, spec in specs().items():
        low = spec.minimum if spec.minimum is not None else spec.exclusive_minimum
        if low is None or spec.type not in ("integer", "number"):
            continue
        d = node.describe_parameter(name)  # keeps the declared type
        if spec.type == "integer":
            d.integer_range = [IntegerRange(from_value=int(low), to_value=_INT_MAX, step=0)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=sys.float_info.max, step=0.0)]
        node.set_descriptor(name, d)


def declare_extrinsics(node: Any, cameras: list[str]) -> dict[str, Any]:
    """Declare ``extrinsics.<camera>`` for each camera; returns the 4x4 poses given at start."""
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.exceptions import ParameterUninitializedException
    from rclpy.parameter import Parameter

    from clip2scene_ros.nodes.transform_buffer import extrinsic_to_matrix

    out = {}
    for cam in cameras:
        name = f"extrinsics.{cam}"
        desc = (f"pose of {cam}'s optical frame in the LiDAR frame: [x,y,z,qx,qy,qz,qw] or 16 row-major "
                "values; empty = from TF")  # fmt: skip
        node.declare_parameter(name, Parameter.Type.DOUBLE_ARRAY, ParameterDescriptor(description=desc))
        try:
            values = list(node.get_parameter(name).value or [])
        except ParameterUninitializedException:
            values = []
        if values:
            try:
                out[cam] = extrinsic_to_matrix(values)
            except ValueError as e:
                raise ValueError(f"parameter {name}: {e}") from None
    return out


@dataclass
class RuntimeUpdate:
    """What a ``ros2 param set`` asks of the running node, checked before anything changes."""

    values: dict[str, Any]  # accepted parameter values
    extrinsics: dict[str, Any]  # camera -> 4x4, or None to fall back to /tf_static
    vocabulary: Any = None  # a newly loaded Vocabulary to encode, when the vocabulary changed
    error: str = ""  # non-empty: reject the whole change with this reason


def runtime_update(current: Mapping[str, Any], changed: list[tuple[str, Any]]) -> RuntimeUpdate:
    """Check (name, value) changes against the schema and what can change while running."""
    from clip2scene_ros.inference.segmenter import load_vocabulary
    from clip2scene_ros.nodes.transform_buffer import extrinsic_to_matrix

    out = RuntimeUpdate({}, {})
    for name, value in changed:
        if name.startswith("extrinsics."):
            try:
                out.extrinsics[name.split(".", 1)[1]] = extrinsic_to_matrix(value) if value else None
            except ValueError as e:
                out.error = f"{name}: {e}"
                return out
        elif name in specs():
            if not specs()[name].runtime:
                out.error = f"restart the node to change '{name}'"
                return out
            out.values[name] = clean(name, value)
    errors = schema_errors(out.values)
    if errors:
        out.error = "; ".join(errors)
    elif "vocabulary" in out.values or "vocabulary_classes" in out.values:
        new = {**current, **out.values}
        try:
            out.vocabulary = load_vocabulary(list(new["vocabulary_classes"]) or new["vocabulary"])
        except (ValueError, FileNotFoundError) as e:
            out.error = f"vocabulary: {e}"
    return out


# ---- topic remapping ---------------------------------------------------------------------------

DEFAULT_POINTS = "/lidar/points"
DEFAULT_CAMERA = "/camera/{name}"  # + /image_raw, /image_raw/compressed, /camera_info


def input_remaps(
    cameras: list[str], points: str = DEFAULT_POINTS, camera: str = DEFAULT_CAMERA
) -> list[tuple[str, str]]:
    """(from, to) remappings of the node's ``~/input/...`` topics onto the usual driver topics.

    Used by the launch file and ``clip2scene segment``; a rule whose topic the parameters renamed
    simply matches nothing.
    """
    out = [("~/input/points", points)]
    for cam in cameras:
        base = camera.format(name=cam)
        out += [(f"~/input/{cam}/image_raw", f"{base}/image_raw"),
                (f"~/input/{cam}/image_raw/compressed", f"{base}/image_raw/compressed"),
                (f"~/input/{cam}/camera_info", f"{base}/camera_info")]  # fmt: skip
    return out


def cameras_in_file(path: str | Path) -> list[str]:
    """The ``cameras`` list of a node parameter YAML (any node section), [] when absent."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    for section in data.values():
        cams = (section or {}).get("ros__parameters", {}).get("cameras") if isinstance(section, dict) else None
        if cams:
            return [str(c) for c in cams if str(c).strip()]
    return []
