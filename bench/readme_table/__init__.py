"""The README's benchmark table: a function per results file, in the order of the table."""

from bench.readme_table import finetune, latency, search, supernet

ROWS = [
    supernet.slicing_overhead,
    supernet.supernet_quality,
    supernet.supernet_quality_mnist1d,
    supernet.supernet_recipe,
    supernet.lm_block_order,
    latency.runtimes,
    latency.latency_predictor,
    search.accuracy_predictor,
    search.search_efficiency,
    search.orchestration_overhead,
    latency.search_latency,
    search.resume_scale,
    latency.export_honesty,
    latency.quantized_layers,
    latency.token_mixers,
    latency.spread_sources,
    latency.latency_protocol,
    latency.decoder_latency,
    search.flexibert_search,
    search.stage_search,
    search.quantized_search,
    supernet.distributed_training,
    finetune.finetune_stage,
    finetune.curve_calibration,
    finetune.curve_pfn_training,
    search.torture,
]
