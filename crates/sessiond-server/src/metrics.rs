//! `/metrics` in Prometheus text format: HTTP requests by route and status, latency histograms,
//! and the library's counters (sessions created/revoked, validation failures by code, refresh
//! reuse detections, the caches' hits, misses, evictions and sizes), the open event streams and
//! connections, read at scrape time.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use sessiond::cache::CacheStats;
use sessiond::SessionService;

use crate::api_keys::ApiKeys;
use crate::conn::Connections;
use crate::hub::EventHub;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// The server's metrics registry.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

#[derive(Debug)]
struct LibraryCollector(SessionService, ApiKeys);

/// The SSE streams open on this node, counted at scrape time.
#[derive(Debug)]
struct StreamsCollector(EventHub);

impl prometheus_client::collector::Collector for StreamsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let gauge = ConstGauge::new(i64::try_from(self.0.open_streams()).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "sessiond_event_streams_open",
            "Server-Sent Event streams open on this node (both kinds, every API key)",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

/// The connections open on this node and those the server closed itself (docs/DESIGN.md §9.8),
/// read at scrape time.
#[derive(Debug)]
struct ConnectionsCollector(Connections);

impl prometheus_client::collector::Collector for ConnectionsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let snap = self.0.snapshot();
        let gauge = ConstGauge::new(i64::try_from(snap.open).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "sessiond_connections_open",
            "Client connections open on this node",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)?;
        let mut family = encoder.encode_descriptor(
            "sessiond_connections_closed",
            "Connections the server closed itself, by reason: header_timeout, idle_timeout, \
             body_timeout (answered 408), shed (at server.max_connections, the one waiting \
             longest), refused_full (at the cap, every connection serving), refused_per_peer",
            None,
            MetricType::Counter,
        )?;
        for (reason, value) in snap.closed {
            let labels = [("reason", reason)];
            let metric = family.encode_family(&labels)?;
            ConstCounter::new(value).encode(metric)?;
        }
        Ok(())
    }
}

/// A cache metric: its name, its help, its type (counter or gauge) and how to read it from a
/// cache's stats.
type CacheSeries = (
    &'static str,
    &'static str,
    MetricType,
    fn(&CacheStats) -> u64,
);

impl prometheus_client::collector::Collector for LibraryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let snap = self.0.metrics().snapshot();
        let simple = [
            (
                "sessiond_sessions_created",
                "Sessions created",
                snap.sessions_created,
            ),
            (
                "sessiond_sessions_revoked",
                "Sessions revoked (any reason)",
                snap.sessions_revoked,
            ),
            (
                "sessiond_refresh_reuse_detected",
                "Refresh-token reuse detections",
                snap.refresh_reuse_detected,
            ),
            (
                "sessiond_audit_failures_suppressed",
                "Failure audit records suppressed by the rate bound",
                snap.audit_failures_suppressed,
            ),
            (
                "sessiond_audit_write_errors",
                "Audit records that could not be written",
                snap.audit_write_errors,
            ),
            (
                "sessiond_events_published",
                "Session events published",
                snap.events_published,
            ),
            (
                "sessiond_event_publish_errors",
                "Session events that could not be published",
                snap.event_publish_errors,
            ),
            (
                "sessiond_watch_lags",
                "Watches that missed events and re-read their session",
                snap.watch_lags,
            ),
        ];
        for (name, help, value) in simple {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let mut refreshes = encoder.encode_descriptor(
            "sessiond_refreshes",
            "Refreshes by outcome: rotated (the current token), converged (a token rotated out \
             inside the grace window or by a concurrent request), reissued (a lost response), \
             reused (theft presumed: session revoked)",
            None,
            MetricType::Counter,
        )?;
        for (outcome, value) in [
            ("rotated", snap.refresh_rotated),
            ("converged", snap.refresh_converged),
            ("reissued", snap.refresh_reissued),
            ("reused", snap.refresh_reuse_detected),
        ] {
            let labels = [("outcome", outcome)];
            let metric = refreshes.encode_family(&labels)?;
            ConstCounter::new(value).encode(metric)?;
        }
        let mut caches = self.0.cache_stats();
        caches.push(("api_keys", self.1.cache_stats()));
        let series: [CacheSeries; 5] = [
            (
                "sessiond_cache_hits",
                "Cache lookups that found an entry, by cache",
                MetricType::Counter,
                |s| s.hits,
            ),
            (
                "sessiond_cache_misses",
                "Cache lookups that found none, by cache",
                MetricType::Counter,
                |s| s.misses,
            ),
            (
                "sessiond_cache_evictions",
                "Cache entries dropped to stay within the cache's limits, by cache",
                MetricType::Counter,
                |s| s.evictions,
            ),
            (
                "sessiond_cache_entries",
                "Entries held now, by cache",
                MetricType::Gauge,
                |s| s.entries,
            ),
            (
                "sessiond_cache_bytes",
                "Bytes held now (estimate), by cache",
                MetricType::Gauge,
                |s| s.bytes,
            ),
        ];
        for (name, help, kind, read) in series {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for (cache, stats) in &caches {
                let labels = [("cache", *cache)];
                let metric = family.encode_family(&labels)?;
                let value = read(stats);
                if matches!(kind, MetricType::Counter) {
                    ConstCounter::new(value).encode(metric)?;
                } else {
                    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "sessiond_validation_failures",
            "Failed validations by reason code",
            None,
            MetricType::Counter,
        )?;
        for (reason, value) in &snap.validation_failures {
            let labels = [("reason", *reason)];
            let metric = family.encode_family(&labels)?;
            ConstCounter::new(*value).encode(metric)?;
        }
        Ok(())
    }
}

impl Metrics {
    /// A registry with the HTTP metrics, `service`'s counters and caches, the API-key cache,
    /// `events`' open streams and `connections`.
    pub(crate) fn new(
        service: SessionService,
        api_keys: ApiKeys,
        events: EventHub,
        connections: Connections,
    ) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register(
            "sessiond_http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "sessiond_http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register_collector(Box::new(LibraryCollector(service, api_keys)));
        registry.register_collector(Box::new(StreamsCollector(events)));
        registry.register_collector(Box::new(ConnectionsCollector(connections)));
        Metrics {
            registry,
            requests,
            latency,
        }
    }

    /// The exposition text.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// Middleware: counts and times every request by its route template (never the raw path, which
/// may carry ids).
/// The method as a metric label, from a fixed set: an unknown method is `other`, so a client
/// cannot mint label values (each one a new series) by sending made-up methods.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

pub(crate) async fn track(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| String::from("unmatched"), |p| p.as_str().to_owned());
    let method = method_label(request.method()).to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route.clone(),
            method: method.clone(),
            status,
        })
        .inc();
    metrics
        .latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(elapsed);
    tracing::debug!(%method, %route, status, elapsed_ms = elapsed * 1000.0, "request");
    response
}
