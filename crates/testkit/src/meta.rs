//! Timestamps as Kubernetes writes them.

use time::OffsetDateTime;
use time::macros::format_description;

/// Now, as `2006-01-02T15:04:05Z`.
pub(crate) fn now_rfc3339() -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    OffsetDateTime::now_utc().format(&fmt).unwrap_or_default()
}

/// kubectl-style short age (`5s`, `3m`, `2h`, `4d`) of an RFC 3339 timestamp.
pub(crate) fn age(timestamp: &str) -> String {
    let Ok(t) = OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
    else {
        return "<unknown>".to_owned();
    };
    let secs = (OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}
