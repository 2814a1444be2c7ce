//! Command-line flags and the optional TOML config file. A flag given on the
//! command line wins over the file, which wins over the default.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use sextant_http::ServerConfig;
use sextant_storage::{FsyncPolicy, Options};

use crate::ServeOptions;

/// Sextant: a Prometheus-compatible time-series store and PromQL server for
/// LLM inference fleets.
#[derive(Debug, Parser)]
#[command(name = "sextant", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server with an embedded store in a local directory.
    Serve(Box<ServeArgs>),
    /// Send the synthetic demo fleet to any remote-write URL.
    Demo(DemoCommand),
}

/// Shape of the demo fleet; shared by `serve --demo` and `sextant demo`.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoArgs {
    /// About how many series the demo fleet has, up to 1000000 [default: 5000].
    #[arg(long, value_name = "N")]
    pub demo_series: Option<usize>,
    /// History written before going live, e.g. 6h [default: 3h].
    #[arg(long, value_name = "DURATION")]
    pub demo_backfill: Option<String>,
    /// Scrape interval of the demo fleet [default: 15s].
    #[arg(long, value_name = "DURATION")]
    pub demo_interval: Option<String>,
    /// Seed of the demo fleet [default: 42].
    #[arg(long, value_name = "N")]
    pub demo_seed: Option<u64>,
    /// Incident schedule: comma-separated `kind@start[/duration][:target]`, start
    /// relative to now (negative is in the backfilled past), or `none`. Kinds:
    /// kv-cache-saturation, ttft-regression, gpu-xid, zone-skew, replica-down
    /// [default: ttft-regression@-30m:1,gpu-xid@-20m:5].
    #[arg(long, value_name = "SCHEDULE")]
    pub demo_incidents: Option<String>,
}

/// Settings of `sextant demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoCommand {
    /// Remote-write URL to send to.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9090/api/v1/write")]
    pub url: String,
    /// Parallel keep-alive connections.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub connections: usize,
    /// Stop after the backfill instead of writing live.
    #[arg(long)]
    pub backfill_only: bool,
    #[command(flatten)]
    pub demo: DemoArgs,
}

/// The demo settings resolved.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    pub series: usize,
    pub backfill_ms: i64,
    pub interval_ms: i64,
    pub seed: u64,
    pub schedule: String,
}

impl DemoArgs {
    fn or(self, f: DemoArgs) -> DemoArgs {
        DemoArgs {
            demo_series: self.demo_series.or(f.demo_series),
            demo_backfill: self.demo_backfill.or(f.demo_backfill),
            demo_interval: self.demo_interval.or(f.demo_interval),
            demo_seed: self.demo_seed.or(f.demo_seed),
            demo_incidents: self.demo_incidents.or(f.demo_incidents),
        }
    }

    pub fn resolve(&self) -> anyhow::Result<DemoSettings> {
        let series = self.demo_series.unwrap_or(5_000);
        if !(100..=1_000_000).contains(&series) {
            bail!("--demo-series must be between 100 and 1000000, got {series}");
        }
        let backfill_ms = duration_ms(self.demo_backfill.as_deref().unwrap_or("3h"), "--demo-backfill")?;
        let interval_ms = duration_ms(self.demo_interval.as_deref().unwrap_or("15s"), "--demo-interval")?;
        if interval_ms < 100 {
            bail!("--demo-interval must be at least 100ms");
        }
        let schedule = self
            .demo_incidents
            .clone()
            .unwrap_or_else(|| "ttft-regression@-30m:1,gpu-xid@-20m:5".into());
        sextant_fleet::incident::parse_schedule(&schedule, 0).map_err(|e| anyhow::anyhow!("--demo-incidents: {e}"))?;
        Ok(DemoSettings {
            series,
            backfill_ms: backfill_ms.max(0),
            interval_ms,
            seed: self.demo_seed.unwrap_or(42),
            schedule,
        })
    }
}

/// Settings of `sextant serve`; each can also be set in the config file under
/// the same name with underscores (`retention_time = "30d"`).
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML config file with any of the settings below.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0:9090].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Address of the OTLP gRPC listener, or `off` [default: 0.0.0.0:4317].
    #[arg(long, value_name = "ADDR")]
    pub otlp_grpc_listen: Option<String>,
    /// Directory of the store [default: ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Delete blocks older than this, e.g. 15d; 0 keeps everything [default: 15d].
    #[arg(long, value_name = "DURATION")]
    pub retention_time: Option<String>,
    /// Delete the oldest blocks while the store is larger than this, e.g. 50GB.
    #[arg(long, value_name = "BYTES")]
    pub retention_size: Option<String>,
    /// Span of the blocks cut from the in-memory head [default: 2h].
    #[arg(long, value_name = "DURATION")]
    pub block_range: Option<String>,
    /// When the WAL is fsynced: `always` (before every acknowledgement), `never`,
    /// or an interval such as `1s`. A killed process loses nothing acknowledged
    /// under any policy; the policy decides what survives power loss [default: 1s].
    #[arg(long, value_name = "POLICY")]
    pub wal_fsync: Option<String>,
    /// Accept samples up to this much older than a series' newest [default: 0s].
    #[arg(long, value_name = "DURATION")]
    pub ooo_window: Option<String>,
    /// Most samples a single query may load [default: 50000000].
    #[arg(long, value_name = "N")]
    pub query_max_samples: Option<usize>,
    /// Longest a query may run [default: 2m].
    #[arg(long, value_name = "DURATION")]
    pub query_timeout: Option<String>,
    /// Queries evaluated at once; others wait for a slot, at most their timeout
    /// (the wait counts toward it) [default: 20].
    #[arg(long, value_name = "N")]
    pub query_max_concurrency: Option<usize>,
    /// How far back instant selectors look [default: 5m].
    #[arg(long, value_name = "DURATION")]
    pub query_lookback: Option<String>,
    /// Range-query steps older than this are cached and reused by later
    /// queries (a live dashboard then evaluates only its newest steps); writes
    /// of older samples and deletes clear the cache; `off` disables it
    /// [default: 10m].
    #[arg(long, value_name = "DURATION")]
    pub query_cache_freshness: Option<String>,
    /// Largest request body, compressed or not, e.g. 32MiB [default: 32MiB].
    #[arg(long, value_name = "BYTES")]
    pub max_request_bytes: Option<String>,
    /// Decompressed remote-write bytes decoded at once across all requests,
    /// e.g. 64MiB; a request waits for room, and one larger than this is
    /// decoded alone. Bounds write memory however many senders there are
    /// [default: 64MiB].
    #[arg(long, value_name = "BYTES")]
    pub write_decode_bytes: Option<String>,
    /// Decoded block chunk pages kept in memory for queries, e.g. 512MiB; a
    /// dashboard's refreshes then decompress nothing [default: 256MiB].
    #[arg(long, value_name = "BYTES")]
    pub block_cache_size: Option<String>,
    /// Most labels a written series may have [default: 128].
    #[arg(long, value_name = "N")]
    pub max_labels_per_series: Option<usize>,
    /// Most active series the store takes; samples of further new series are
    /// rejected with a 400 naming the limit [default: no limit].
    #[arg(long, value_name = "N")]
    pub max_series: Option<u64>,
    /// Most active series per metric name [default: no limit].
    #[arg(long, value_name = "N")]
    pub max_series_per_metric: Option<u64>,
    /// How OTLP metric names are translated: UnderscoreEscapingWithSuffixes,
    /// UnderscoreEscapingWithoutSuffixes, NoUTF8EscapingWithSuffixes or
    /// NoTranslation [default: UnderscoreEscapingWithSuffixes].
    #[arg(long, value_name = "STRATEGY")]
    pub otlp_translation_strategy: Option<String>,
    /// Comma-separated OTLP resource attributes copied onto every series.
    #[arg(long, value_name = "ATTRS")]
    pub otlp_promote_resource_attributes: Option<String>,
    /// Add otel_scope_name and otel_scope_version labels to OTLP series.
    #[arg(long)]
    pub otlp_scope_labels: Option<bool>,
    /// Log level or filter (error, warn, info, debug, or a tracing filter) [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// TOML file of credentials per endpoint class, tables `[write]`, `[query]`
    /// and `[admin]`, each with `bearer_tokens = [..]` and/or
    /// `basic_users = { user = "password" }`; a class left out stays open.
    #[arg(long, value_name = "FILE")]
    pub auth_config: Option<PathBuf>,
    /// Serve HTTPS, and OTLP gRPC over TLS, with this PEM certificate chain
    /// (needs --tls-key-file). Both files are read again when they change,
    /// so a renewed certificate needs no restart.
    #[arg(long, value_name = "FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key of --tls-cert-file (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Run the synthetic inference fleet and write it into this server through
    /// its own remote-write endpoint.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub demo: Option<bool>,
    /// The demo fleet's settings; in the config file, the `[demo_fleet]` table.
    #[command(flatten)]
    #[serde(default, rename = "demo_fleet")]
    pub demo_args: DemoArgs,
}

fn duration_ms(s: &str, what: &str) -> anyhow::Result<i64> {
    sextant_promql::promqltest::parse_duration(s)
        .with_context(|| format!("{what}: {s:?} is not a duration such as 30s, 5m, 2h or 15d"))
}

/// Parses `1024`, `64KB`, `32MiB`, `10GB`, `1TiB`.
pub fn parse_bytes(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let digits = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: f64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a size such as 512MB or 10GiB"))?;
    let mult: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        "TIB" => 1024.0f64.powi(4),
        other => bail!("{s:?}: unknown size unit {other:?}"),
    };
    Ok((n * mult) as u64)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthClassFile {
    #[serde(default)]
    bearer_tokens: Vec<String>,
    #[serde(default)]
    basic_users: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    #[serde(default)]
    write: Option<AuthClassFile>,
    #[serde(default)]
    query: Option<AuthClassFile>,
    #[serde(default)]
    admin: Option<AuthClassFile>,
}

/// Reads the credentials file. Errors name the file and the problem, never a
/// secret.
pub fn load_auth(path: &std::path::Path) -> anyhow::Result<sextant_http::auth::AuthConfig> {
    use sextant_http::auth::{AuthConfig, Credentials};
    let text = std::fs::read_to_string(path).with_context(|| format!("reading auth config {}", path.display()))?;
    let f: AuthFile = toml::from_str(&text).map_err(|e| {
        // The parser's message may quote a value, which may be a secret:
        // quoted text is masked, and the line number says where to look.
        let mut what = String::new();
        for (i, part) in e.message().split('"').enumerate() {
            what.push_str(if i % 2 == 1 { "\"…\"" } else { part });
        }
        let line = e
            .span()
            .map(|r| text[..r.start.min(text.len())].matches('\n').count() + 1);
        match line {
            Some(l) => anyhow::anyhow!("auth config {} line {l}: {what}", path.display()),
            None => anyhow::anyhow!("auth config {}: {what}", path.display()),
        }
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(target: "sextant", "auth config {} is readable by other users; chmod 600 it", path.display());
            }
        }
    }
    let conv = |c: Option<AuthClassFile>, class: &str| -> anyhow::Result<Credentials> {
        let c = c.unwrap_or_default();
        if c.bearer_tokens.iter().any(|t| t.trim().is_empty()) {
            bail!("auth config {}: [{class}] has an empty bearer token", path.display());
        }
        if c.basic_users
            .iter()
            .any(|(u, p)| u.is_empty() || p.is_empty() || u.contains(':'))
        {
            bail!(
                "auth config {}: [{class}] basic users need a name without ':' and a non-empty password",
                path.display()
            );
        }
        Ok(Credentials {
            bearer_tokens: c.bearer_tokens,
            basic: c.basic_users.into_iter().collect(),
        })
    };
    let cfg = AuthConfig {
        write: conv(f.write, "write")?,
        query: conv(f.query, "query")?,
        admin: conv(f.admin, "admin")?,
    };
    for (class, c) in [("write", &cfg.write), ("query", &cfg.query), ("admin", &cfg.admin)] {
        if c.is_empty() {
            tracing::info!(target: "sextant", "{class} endpoints are open (no credentials configured)");
        } else {
            tracing::info!(target: "sextant", "{class} endpoints need authentication ({c:?})");
        }
    }
    Ok(cfg)
}

impl ServeArgs {
    /// Fills unset flags from the config file, if one is given.
    pub fn merged(self) -> anyhow::Result<ServeArgs> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading config file {}", path.display()))?;
        let f: ServeArgs = toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?;
        Ok(ServeArgs {
            config: self.config,
            listen: self.listen.or(f.listen),
            otlp_grpc_listen: self.otlp_grpc_listen.or(f.otlp_grpc_listen),
            data_dir: self.data_dir.or(f.data_dir),
            retention_time: self.retention_time.or(f.retention_time),
            retention_size: self.retention_size.or(f.retention_size),
            block_range: self.block_range.or(f.block_range),
            wal_fsync: self.wal_fsync.or(f.wal_fsync),
            ooo_window: self.ooo_window.or(f.ooo_window),
            query_max_samples: self.query_max_samples.or(f.query_max_samples),
            query_timeout: self.query_timeout.or(f.query_timeout),
            query_max_concurrency: self.query_max_concurrency.or(f.query_max_concurrency),
            query_lookback: self.query_lookback.or(f.query_lookback),
            query_cache_freshness: self.query_cache_freshness.or(f.query_cache_freshness),
            max_request_bytes: self.max_request_bytes.or(f.max_request_bytes),
            write_decode_bytes: self.write_decode_bytes.or(f.write_decode_bytes),
            block_cache_size: self.block_cache_size.or(f.block_cache_size),
            max_labels_per_series: self.max_labels_per_series.or(f.max_labels_per_series),
            max_series: self.max_series.or(f.max_series),
            max_series_per_metric: self.max_series_per_metric.or(f.max_series_per_metric),
            otlp_translation_strategy: self.otlp_translation_strategy.or(f.otlp_translation_strategy),
            otlp_promote_resource_attributes: self
                .otlp_promote_resource_attributes
                .or(f.otlp_promote_resource_attributes),
            otlp_scope_labels: self.otlp_scope_labels.or(f.otlp_scope_labels),
            log_level: self.log_level.or(f.log_level),
            auth_config: self.auth_config.or(f.auth_config),
            tls_cert_file: self.tls_cert_file.or(f.tls_cert_file),
            tls_key_file: self.tls_key_file.or(f.tls_key_file),
            demo: self.demo.or(f.demo),
            demo_args: self.demo_args.or(f.demo_args),
        })
    }

    /// Resolves every setting to its final value.
    pub fn resolve(&self) -> anyhow::Result<ServeOptions> {
        let mut storage = Options::default();
        let retention = self.retention_time.clone().unwrap_or_else(|| "15d".into());
        let r = duration_ms(&retention, "--retention-time")?;
        storage.retention_ms = (r > 0).then_some(r);
        storage.retention_bytes = self
            .retention_size
            .as_deref()
            .map(parse_bytes)
            .transpose()
            .context("--retention-size")?;
        if let Some(b) = &self.block_range {
            storage.block_range_ms = duration_ms(b, "--block-range")?;
            if storage.block_range_ms < 60_000 {
                bail!("--block-range must be at least 1m, got {b:?}");
            }
        }
        storage.fsync = match self.wal_fsync.as_deref().unwrap_or("1s") {
            "always" => FsyncPolicy::Always,
            "never" => FsyncPolicy::Never,
            d => {
                let ms = duration_ms(d, "--wal-fsync (always, never or a duration)")?;
                if ms <= 0 {
                    bail!("--wal-fsync interval must be positive");
                }
                FsyncPolicy::IntervalMs(ms as u64)
            }
        };
        if let Some(o) = &self.ooo_window {
            storage.ooo_window_ms = duration_ms(o, "--ooo-window")?;
        }
        if let Some(b) = &self.block_cache_size {
            storage.block_cache_bytes = parse_bytes(b).context("--block-cache-size")? as usize;
        }
        storage.max_series = self.max_series.filter(|n| *n > 0);
        storage.max_series_per_metric = self.max_series_per_metric.filter(|n| *n > 0);
        let mut server = ServerConfig::default();
        if let Some(n) = self.query_max_samples {
            server.engine.max_samples = n;
        }
        if let Some(t) = &self.query_timeout {
            server.engine.timeout = Some(Duration::from_millis(duration_ms(t, "--query-timeout")?.max(1) as u64));
        }
        if let Some(l) = &self.query_lookback {
            server.engine.lookback_ms = duration_ms(l, "--query-lookback")?;
        }
        match self.query_cache_freshness.as_deref() {
            None => {}
            Some("off") => server.query_cache_freshness_ms = None,
            Some(d) => {
                let ms = duration_ms(d, "--query-cache-freshness (a duration or off)")?;
                if ms < 60_000 {
                    bail!("--query-cache-freshness must be at least 1m (or off), got {d:?}");
                }
                server.query_cache_freshness_ms = Some(ms);
                storage.late_write_ms = ms;
            }
        }
        if let Some(n) = self.query_max_concurrency {
            server.max_concurrent_queries = n.max(1);
        }
        if let Some(b) = &self.max_request_bytes {
            let n = parse_bytes(b).context("--max-request-bytes")? as usize;
            server.max_request_bytes = n;
            server.ingest.max_body_bytes = n.max(server.ingest.max_body_bytes);
        }
        if let Some(b) = &self.write_decode_bytes {
            server.write_decode_bytes = parse_bytes(b).context("--write-decode-bytes")? as usize;
        }
        if let Some(n) = self.max_labels_per_series {
            server.ingest.max_labels = n;
        }
        if let Some(t) = &self.otlp_translation_strategy {
            use sextant_ingest::otlp::Translation;
            server.otlp.translation = match t.as_str() {
                "UnderscoreEscapingWithSuffixes" => Translation::UnderscoreEscapingWithSuffixes,
                "UnderscoreEscapingWithoutSuffixes" => Translation::UnderscoreEscapingWithoutSuffixes,
                "NoUTF8EscapingWithSuffixes" => Translation::NoUtf8EscapingWithSuffixes,
                "NoTranslation" => Translation::NoTranslation,
                other => bail!("--otlp-translation-strategy: unknown strategy {other:?}"),
            };
        }
        if let Some(a) = &self.otlp_promote_resource_attributes {
            server.otlp.promote_resource_attributes = a
                .split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect();
        }
        server.otlp.scope_labels = self.otlp_scope_labels.unwrap_or(false);
        if let Some(path) = &self.auth_config {
            server.auth = load_auth(path)?;
        }
        server.retention = retention.clone();
        let listen = self.listen.clone().unwrap_or_else(|| "0.0.0.0:9090".into());
        let data_dir = self.data_dir.clone().unwrap_or_else(|| PathBuf::from("./data"));
        server.flags = vec![
            ("web.listen-address".into(), listen.clone()),
            ("storage.tsdb.path".into(), data_dir.display().to_string()),
            ("storage.tsdb.retention.time".into(), retention),
            (
                "storage.tsdb.retention.size".into(),
                self.retention_size.clone().unwrap_or_else(|| "0B".into()),
            ),
            (
                "storage.tsdb.min-block-duration".into(),
                self.block_range.clone().unwrap_or_else(|| "2h".into()),
            ),
            (
                "storage.tsdb.wal-fsync".into(),
                self.wal_fsync.clone().unwrap_or_else(|| "1s".into()),
            ),
            (
                "storage.tsdb.out-of-order-time-window".into(),
                self.ooo_window.clone().unwrap_or_else(|| "0s".into()),
            ),
            ("query.max-samples".into(), server.engine.max_samples.to_string()),
            (
                "query.timeout".into(),
                self.query_timeout.clone().unwrap_or_else(|| "2m".into()),
            ),
            (
                "query.max-concurrency".into(),
                server.max_concurrent_queries.to_string(),
            ),
            (
                "query.cache-freshness".into(),
                self.query_cache_freshness.clone().unwrap_or_else(|| "10m".into()),
            ),
            (
                "query.lookback-delta".into(),
                self.query_lookback.clone().unwrap_or_else(|| "5m".into()),
            ),
            ("web.enable-remote-write-receiver".into(), "true".into()),
            ("web.write-decode-bytes".into(), server.write_decode_bytes.to_string()),
            ("storage.block-cache-size".into(), storage.block_cache_bytes.to_string()),
            (
                "storage.max-series".into(),
                self.max_series.map(|n| n.to_string()).unwrap_or_else(|| "0".into()),
            ),
            (
                "storage.max-series-per-metric".into(),
                self.max_series_per_metric
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "0".into()),
            ),
            (
                "web.auth-config".into(),
                self.auth_config
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
        ];
        let otlp_grpc_listen = match self.otlp_grpc_listen.as_deref().unwrap_or("0.0.0.0:4317") {
            "off" | "" => None,
            a => Some(a.to_string()),
        };
        server.flags.push((
            "otlp.grpc-listen-address".into(),
            otlp_grpc_listen.clone().unwrap_or_else(|| "off".into()),
        ));
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(c), Some(k)) => Some(crate::tls::TlsFiles {
                cert_file: c.clone(),
                key_file: k.clone(),
            }),
            (None, None) => None,
            _ => bail!("TLS needs both tls_cert_file and tls_key_file"),
        };
        for (name, v) in [
            ("web.tls-cert-file", &self.tls_cert_file),
            ("web.tls-key-file", &self.tls_key_file),
        ] {
            server.flags.push((
                name.into(),
                v.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            ));
        }
        let demo = if self.demo.unwrap_or(false) {
            Some(self.demo_args.resolve()?)
        } else {
            None
        };
        Ok(ServeOptions {
            listen,
            otlp_grpc_listen,
            data_dir,
            storage,
            server,
            demo,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("10GB").expect("ok"), 10_000_000_000);
        assert_eq!(parse_bytes("32MiB").expect("ok"), 32 << 20);
        assert_eq!(parse_bytes("1024").expect("ok"), 1024);
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let f = dir.path().join("s.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:1\"\nretention_time = \"30d\"\nwal_fsync = \"always\"\n",
        )
        .expect("write");
        let args = ServeArgs {
            config: Some(f),
            listen: Some("127.0.0.1:2".into()),
            ..Default::default()
        };
        let o = args.merged().expect("merge").resolve().expect("resolve");
        assert_eq!(o.listen, "127.0.0.1:2");
        assert_eq!(o.storage.retention_ms, Some(30 * 86_400_000));
        assert_eq!(o.storage.fsync, FsyncPolicy::Always);
    }

    #[test]
    fn demo_settings_come_from_flags_or_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let f = dir.path().join("s.toml");
        std::fs::write(
            &f,
            "demo = true\n[demo_fleet]\ndemo_series = 2000\ndemo_interval = \"5s\"\n",
        )
        .expect("write");
        let args = ServeArgs {
            config: Some(f),
            demo_args: DemoArgs {
                demo_interval: Some("1s".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let o = args.merged().expect("merge").resolve().expect("resolve");
        let d = o.demo.expect("demo on");
        assert_eq!((d.series, d.interval_ms), (2000, 1000));
        assert!(d.schedule.contains("ttft-regression"));
        let e = ServeArgs {
            demo: Some(true),
            demo_args: DemoArgs {
                demo_incidents: Some("gpu-melts@1m".into()),
                ..Default::default()
            },
            ..Default::default()
        }
        .resolve()
        .expect_err("bad schedule");
        assert!(format!("{e:#}").contains("gpu-melts"), "{e:#}");
        assert!(ServeArgs::default().resolve().expect("ok").demo.is_none());
    }

    #[test]
    fn the_block_cache_size_comes_from_the_flag_or_the_file_and_is_listed() {
        let dir = tempfile::tempdir().expect("dir");
        let f = dir.path().join("s.toml");
        std::fs::write(&f, "block_cache_size = \"64MiB\"\n").expect("write");
        let from_file = ServeArgs {
            config: Some(f),
            ..Default::default()
        };
        let o = from_file.merged().expect("merge").resolve().expect("resolve");
        assert_eq!(o.storage.block_cache_bytes, 64 << 20);
        assert!(o
            .server
            .flags
            .iter()
            .any(|(k, v)| k == "storage.block-cache-size" && v == &(64u64 << 20).to_string()));
        let default = ServeArgs::default().resolve().expect("resolve");
        assert_eq!(default.storage.block_cache_bytes, 256 << 20);
        let bad = ServeArgs {
            block_cache_size: Some("lots".into()),
            ..Default::default()
        };
        let e = bad.resolve().expect_err("not a size");
        assert!(format!("{e:#}").contains("--block-cache-size"), "{e:#}");
    }

    #[test]
    fn unknown_config_keys_are_errors() {
        let dir = tempfile::tempdir().expect("dir");
        let f = dir.path().join("s.toml");
        std::fs::write(&f, "lisen = \"x\"\n").expect("write");
        let e = ServeArgs {
            config: Some(f),
            ..Default::default()
        }
        .merged()
        .expect_err("typo");
        assert!(format!("{e:#}").contains("lisen"), "{e:#}");
    }
}
