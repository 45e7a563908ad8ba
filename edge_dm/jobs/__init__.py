"""The jobs the CLI runs, one module each: each takes one config, checks everything it can before
any work, runs the library's in-memory steps and writes its output atomically.

    export(ExportConfig)          edge_dm.jobs.conversion    a model as an OpenVINO IR bundle
    quantize(QuantizeJobConfig)   edge_dm.jobs.quantization  calibrate, quantize, check: an int8 bundle
    generate(GenerateConfig)      edge_dm.jobs.generation    images of a bundle, as PNGs
    evaluate(EvaluateConfig)      edge_dm.jobs.evaluation    FID/sFID, drift, class accuracy
    benchmark(BenchmarkConfig)    edge_dm.jobs.speed         float and int8 speed side by side
                                  (what it times with: timing; its tables and charts: summary)
    train(TrainConfig)            edge_dm.jobs.training      how the shipped models were trained (GPU)
                                  (text-to-image: training_t2i; latent consistency distillation: training_lcm)
    sweep(SweepConfig)            edge_dm.jobs.sweep         quantize over a grid of options and seeds, score each

generate and evaluate run on a Ray cluster where their config's `cluster` says so (ClusterConfig;
edge_dm.jobs.cluster: connect, sample_on_cluster).

Python callers may use these or the steps below them (edge_dm.load_model, calibrate, quantize_model,
Pipeline).
"""
from edge_dm.errors import ClusterError
from edge_dm.jobs.cluster import ClusterJob, connect, sample_on_cluster
from edge_dm.jobs.conversion import export
from edge_dm.jobs.evaluation import evaluate
from edge_dm.jobs.generation import generate
from edge_dm.jobs.quantization import quantize
from edge_dm.jobs.speed import benchmark
from edge_dm.jobs.sweep import SweepConfig, sweep
from edge_dm.jobs.training import TrainConfig, train

__all__ = ["export", "evaluate", "generate", "quantize", "benchmark", "train", "TrainConfig", "sweep", "SweepConfig",
           "connect", "sample_on_cluster", "ClusterJob", "ClusterError"]
