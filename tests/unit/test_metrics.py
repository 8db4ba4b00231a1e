"""The lock-free series behind /metrics: bucket edges, cumulative exposition, and dropping a version's series."""

from service.metrics import Metrics, _Histogram


def test_histogram_counts_values_on_a_bound_into_that_bucket():
    h = _Histogram((1.0, 2.0))
    for value in (0.5, 1.0, 1.5, 2.0, 7.0):
        h.observe(value)
    assert h.exposition() == [("1.0", 2), ("2.0", 4), ("+Inf", 5)]
    assert h.count == 5 and h.sum == 12.0


def test_rendered_text_has_requests_batches_and_queue_depth():
    metrics = Metrics()
    metrics.observe_request("/encode", 200, 0.002)
    metrics.observe_request("/encode", 200, 0.004)
    metrics.observe_request("other", 404, 0.001)  # the middleware passes a route template, or "other"
    observer = metrics.batch_observer("vae", 3, "encode")
    observer.batch(5, 0.01)
    observer.waited(0.0001)
    observer.depth(7)
    text = metrics.render().decode()
    assert 'latentserve_requests_total{endpoint="/encode",status="200"} 2.0' in text
    assert 'latentserve_requests_total{endpoint="other",status="404"} 1.0' in text
    assert 'latentserve_rejections_total{reason="not_found"} 1.0' in text
    assert 'latentserve_request_seconds_bucket{endpoint="/encode",le="0.0025",status="200"} 1.0' in text
    assert 'latentserve_batch_size_bucket{le="8.0",model="vae",operation="encode",version="3"} 1.0' in text
    assert 'latentserve_batch_size_sum{model="vae",operation="encode",version="3"} 5.0' in text
    assert 'latentserve_queue_items{model="vae",operation="encode",version="3"} 7.0' in text


def test_unloading_a_version_drops_its_series():
    metrics = Metrics()
    metrics.model_loaded("vae", 3, "vae")
    metrics.batch_observer("vae", 3, "encode").batch(1, 0.001)
    metrics.model_unloaded("vae", 3, "vae")
    text = metrics.render().decode()
    assert 'version="3"' not in text
