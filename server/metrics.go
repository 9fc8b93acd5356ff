package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are one server's Prometheus collectors, on a registry of its own so that two
// servers in one process (tests) never collide.
type metrics struct {
	registry    *prometheus.Registry
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	inflight    prometheus.Gauge
	shed        *prometheus.CounterVec
	upserts     *prometheus.CounterVec
	streamBatch prometheus.Histogram
	embedBatch  prometheus.Histogram
	embedRun    prometheus.Histogram
	embedQueue  prometheus.Gauge
	backupBytes prometheus.Counter
}

func newMetrics(indexSize func() float64) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lookalike_grpc_requests_total", Help: "gRPC calls finished, by method and status code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "lookalike_grpc_request_duration_seconds", Help: "gRPC call latency, by method and status code.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
		}, []string{"method", "code"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lookalike_grpc_in_flight", Help: "gRPC calls holding a concurrency slot.",
		}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lookalike_grpc_shed_total", Help: "Calls refused with RESOURCE_EXHAUSTED by the concurrency limit.",
		}, []string{"method"}),
		upserts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lookalike_upsert_items_total", Help: "Upserted items by outcome (created, updated, unchanged, failed).",
		}, []string{"outcome"}),
		streamBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lookalike_upsert_stream_batch_items", Help: "Items per internal UpsertStream batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 8),
		}),
		embedBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lookalike_embed_batch_size", Help: "Images per model run.",
			Buckets: prometheus.LinearBuckets(1, 1, 32),
		}),
		embedRun: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lookalike_embed_inference_seconds", Help: "Model run time per batch.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		embedQueue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lookalike_embed_queue_depth", Help: "Embedding requests waiting for the model, as last seen.",
		}),
		backupBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lookalike_backup_bytes_total", Help: "Store bytes sent by Backup calls.",
		}),
	}
	m.registry.MustRegister(m.requests, m.latency, m.inflight, m.shed, m.upserts, m.streamBatch,
		m.embedBatch, m.embedRun, m.embedQueue, m.backupBytes,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "lookalike_index_items", Help: "Products in the search index.",
		}, indexSize),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// ObserveBatch implements embed.Observer.
func (m *metrics) ObserveBatch(size int, inference time.Duration) {
	m.embedBatch.Observe(float64(size))
	m.embedRun.Observe(inference.Seconds())
}

// ObserveQueue implements embed.Observer.
func (m *metrics) ObserveQueue(depth int) { m.embedQueue.Set(float64(depth)) }
