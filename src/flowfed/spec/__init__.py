"""Flow definitions: the model, the YAML/JSON loaders and the seed-003 JSON format."""

from flowfed.spec.diagnostics import Diagnostic, FlowError
from flowfed.spec.loader import LoadedFlow, SourceMap, load_flow, parse_flow_text
from flowfed.spec.models import END, Flow, Next, Step, StepTool

__all__ = [
    "END",
    "Diagnostic",
    "Flow",
    "FlowError",
    "LoadedFlow",
    "Next",
    "SourceMap",
    "Step",
    "StepTool",
    "load_flow",
    "parse_flow_text",
]
