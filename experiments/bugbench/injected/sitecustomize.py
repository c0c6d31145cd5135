"""Plants the defects named by ``HIGEN_BUGBENCH_DEFECT`` (comma-separated, see defects.py) into ONNX
Runtime, in bugbench's injected-tier processes only; a no-op everywhere else."""

import os

if os.environ.get("HIGEN_BUGBENCH_DEFECT"):
    import signal

    import numpy as np
    import onnx
    import onnxruntime

    from defects import DEFECTS, Graph

    PLANTED = [DEFECTS[name] for name in os.environ["HIGEN_BUGBENCH_DEFECT"].split(",")]
    Session = onnxruntime.InferenceSession

    class DefectiveSession(Session):
        """InferenceSession with the planted defects: decided once per model, applied on every run."""

        def __init__(self, path_or_bytes, *args, **kwargs):
            model = onnx.load(path_or_bytes) if isinstance(path_or_bytes, (str, os.PathLike)) \
                else onnx.load_from_string(path_or_bytes)
            graph = Graph(model)
            self._corrupt = set()
            for defect in PLANTED:
                trigger = defect.trigger(graph)
                if trigger is not None and defect.effect == "crash":
                    os.kill(os.getpid(), signal.SIGSEGV)
                if trigger is not None:
                    self._corrupt |= set(graph.downstream_outputs(trigger))
            super().__init__(path_or_bytes, *args, **kwargs)

        def run(self, output_names, input_feed, run_options=None):
            names = output_names or [o.name for o in self.get_outputs()]
            results = super().run(names, input_feed, run_options)
            for index, name in enumerate(names):
                if name in self._corrupt and results[index].size:
                    value = np.array(results[index], copy=True)
                    value.flat[0] = not value.flat[0] if value.dtype == bool else value.flat[0] + 1
                    results[index] = value
            return results

    onnxruntime.InferenceSession = DefectiveSession
