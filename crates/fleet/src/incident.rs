//! Incidents the demo fleet can suffer. Each is a pure description (what, to
//! whom, from when to when) that [`crate::Fleet::value_at`] applies, so a
//! fleet with incidents stays a pure function of time.

use crate::{FleetSpec, Place};

/// The kinds of incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IncidentKind {
    /// One replica's KV cache fills up, its queue grows and it preempts.
    KvCacheSaturation,
    /// One inference component's time to first token regresses after a deploy.
    TtftRegression,
    /// One GPU reports XID 79 and a minute later falls off the bus.
    GpuXid,
    /// Traffic shifts toward one availability zone.
    ZoneSkew,
    /// One replica stops reporting.
    ReplicaDown,
}

impl IncidentKind {
    pub const ALL: [IncidentKind; 5] = [
        IncidentKind::KvCacheSaturation,
        IncidentKind::TtftRegression,
        IncidentKind::GpuXid,
        IncidentKind::ZoneSkew,
        IncidentKind::ReplicaDown,
    ];

    /// The name used on the command line and in the API.
    pub fn name(self) -> &'static str {
        match self {
            IncidentKind::KvCacheSaturation => "kv-cache-saturation",
            IncidentKind::TtftRegression => "ttft-regression",
            IncidentKind::GpuXid => "gpu-xid",
            IncidentKind::ZoneSkew => "zone-skew",
            IncidentKind::ReplicaDown => "replica-down",
        }
    }

    pub fn parse(s: &str) -> Option<IncidentKind> {
        IncidentKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// One incident: `kind` hitting `target` from `start_ms` until `end_ms`.
///
/// `target` is a replica index for replica and GPU incidents, an inference
/// component index for a regression, a zone index for a skew; each is taken
/// modulo the fleet's count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub kind: IncidentKind,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    pub target: usize,
}

impl Incident {
    pub fn active(&self, t_ms: i64) -> bool {
        t_ms >= self.start_ms && self.end_ms.is_none_or(|e| t_ms < e)
    }

    /// Whether a series at `place` is the incident's target.
    pub fn affects(&self, spec: &FleetSpec, place: &Place) -> bool {
        let replicas = spec.replica_count().max(1);
        let comps = (spec.endpoints * spec.components).max(1);
        match self.kind {
            IncidentKind::KvCacheSaturation | IncidentKind::ReplicaDown => {
                place.replica as usize == self.target % replicas
            }
            IncidentKind::GpuXid => place.replica as usize == self.target % replicas,
            IncidentKind::TtftRegression => place.component as usize == self.target % comps,
            IncidentKind::ZoneSkew => place.zone as usize == self.target % 3,
        }
    }
}

/// Parses a schedule such as `kv-cache-saturation@-30m,zone-skew@+10m/20m:2`:
/// kind, start relative to `now_ms` (negative is in the backfilled past), an
/// optional duration after `/`, and an optional target after `:`.
pub fn parse_schedule(s: &str, now_ms: i64) -> Result<Vec<Incident>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        if item == "none" {
            continue;
        }
        let (kind, rest) = item.split_once('@').unwrap_or((item, "+0s"));
        let kind = IncidentKind::parse(kind).ok_or_else(|| {
            let names: Vec<&str> = IncidentKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown incident {kind:?}; known: {}", names.join(", "))
        })?;
        let (when, target) = match rest.split_once(':') {
            Some((w, t)) => (
                w,
                t.parse::<usize>().map_err(|_| format!("{item:?}: bad target {t:?}"))?,
            ),
            None => (rest, 0),
        };
        let (start, dur) = match when.split_once('/') {
            Some((a, d)) => (a, Some(d)),
            None => (when, None),
        };
        let sign = if start.starts_with('-') { -1 } else { 1 };
        let start_ms = now_ms + sign * duration_ms(start.trim_start_matches(['+', '-']), item)?;
        let end_ms = dur.map(|d| duration_ms(d, item).map(|d| start_ms + d)).transpose()?;
        out.push(Incident {
            kind,
            start_ms,
            end_ms,
            target,
        });
    }
    Ok(out)
}

fn duration_ms(s: &str, item: &str) -> Result<i64, String> {
    let bad = || format!("{item:?}: {s:?} is not a duration such as 90s, 30m or 2h");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let mult = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    Ok(n * mult)
}
