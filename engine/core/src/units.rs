//! Durations (`90s`, `10m`, `1h30m`), signed offsets (`-10m`), sizes (`512M`, `4G`) and
//! UTC instants (`2026-03-01T00:00Z`) as written in workflows.
//!
//! Hand-written on purpose: the grammar is ours (SLURM-like binary sizes, concatenated
//! duration units) and small; crates such as `humantime` and `bytesize` accept other
//! spellings (`4 GB` as 10⁹ bytes, `1month`) that would change what a workflow means.

use std::time::Duration;

/// A duration that does not parse; the message names the text and, where known, the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing was written.
    #[error("empty duration")]
    Empty,
    /// Not a number of seconds nor numbers with units, or out of range (negative, more
    /// than a year).
    #[error("invalid duration `{0}`")]
    Invalid(String),
    /// A unit other than `ms`, `s`, `m`, `h`, `d`.
    #[error("invalid duration `{text}`: unknown unit `{unit}` (use ms, s, m, h, d)")]
    UnknownUnit {
        /// The duration as written.
        text: String,
        /// The unit, as written.
        unit: String,
    },
    /// A number without a unit after other parts (`5m3`).
    #[error("invalid duration `{0}`: a number needs a unit (`30s`, `10m`, `2h`)")]
    MissingUnit(String),
    /// A minus sign where only a length of time fits (`every: -10m`).
    #[error("invalid duration `{0}`: a duration cannot be negative")]
    Negative(String),
    /// ISO 8601 (`PT10M`, `P1D`), as Cylc writes them.
    #[error("invalid duration `{0}`: ISO 8601 durations are not read here; write `10m`, `1h30m`, `1d`")]
    Iso(String),
}

/// Parses a duration: a number of seconds, or numbers with units `ms`, `s`, `m`, `h`, `d`
/// concatenated (`1h30m`).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = || DurationError::Invalid(s.to_string());
    if s.starts_with('-') {
        return Err(DurationError::Negative(s.to_string()));
    }
    if s.len() > 1 && s.starts_with(['P', 'p']) && s[1..].starts_with(|c: char| c.is_ascii_digit() || c == 'T') {
        return Err(DurationError::Iso(s.to_string()));
    }
    if let Ok(secs) = s.parse::<f64>() {
        return secs_to_duration(secs).ok_or_else(invalid);
    }
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0.001
            }
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            _ => {
                // Name the whole unit (`parsecs`, not `p`; not the space in `5 parsecs`).
                let word: String =
                    std::iter::once(c).chain(chars.take_while(|x| !x.is_ascii_digit() && *x != '.')).collect();
                let word = if word.trim().is_empty() { c.to_string() } else { word.trim().to_string() };
                return Err(DurationError::UnknownUnit { text: s.to_string(), unit: word });
            }
        };
        let n: f64 = num.parse().map_err(|_| invalid())?;
        total += n * unit;
        num.clear();
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(DurationError::MissingUnit(s.to_string()));
    }
    secs_to_duration(total).ok_or_else(invalid)
}

fn secs_to_duration(secs: f64) -> Option<Duration> {
    // A year is far beyond any walltime; refusing larger values keeps arithmetic safe.
    (secs.is_finite() && (0.0..=366.0 * 86400.0).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

/// Formats a duration compactly for messages and batch scripts (`1h30m`, `45s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if m > 0 {
        out += &format!("{m}m");
    }
    if s > 0 || out.is_empty() {
        out += &format!("{s}s");
    }
    out
}

/// A size that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// No number before the unit.
    #[error("invalid size `{0}` (use e.g. `512M`, `4G`)")]
    NotANumber(String),
    /// A unit other than the binary multiples.
    #[error("invalid size `{text}`: unknown unit `{unit}` (use K, M, G, T)")]
    UnknownUnit {
        /// The size as written.
        text: String,
        /// The unit, as written.
        unit: String,
    },
    /// Negative, or above 2⁶⁰ bytes.
    #[error("invalid size `{0}`")]
    OutOfRange(String),
}

/// Parses a size in bytes: `1024`, `512K`, `512M`, `4G`, `1T`, optionally followed by `B`
/// (`4GB`), or with an `i` before it (`512MiB`); all are binary multiples, like SLURM's
/// `--mem`. Letters are case-insensitive.
pub fn parse_bytes(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| SizeError::NotANumber(s.to_string()))?;
    let unit = unit.trim();
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(SizeError::UnknownUnit { text: s.to_string(), unit: unit.to_string() }),
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > (1u64 << 60) as f64 {
        return Err(SizeError::OutOfRange(s.to_string()));
    }
    Ok(bytes as u64)
}

/// Parses a signed duration: an optional `+` or `-` followed by a [`parse_duration`]
/// duration (`+5m`, `-1h`, `0s`).
pub fn parse_signed_duration(s: &str) -> Result<jiff::SignedDuration, DurationError> {
    let t = s.trim();
    let (neg, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let d = parse_duration(rest).map_err(|e| match e {
        // Name the text as written, sign included.
        DurationError::Invalid(_) => DurationError::Invalid(t.to_string()),
        DurationError::MissingUnit(_) => DurationError::MissingUnit(t.to_string()),
        DurationError::UnknownUnit { unit, .. } => DurationError::UnknownUnit { text: t.to_string(), unit },
        DurationError::Empty | DurationError::Negative(_) if !t.is_empty() => DurationError::Invalid(t.to_string()),
        DurationError::Iso(_) => DurationError::Iso(t.to_string()),
        other => other,
    });
    let d = d?;
    // `parse_duration` caps durations at a year, so this always fits.
    let sd = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    Ok(if neg { -sd } else { sd })
}

/// An instant that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstantError {
    /// Not an ISO 8601 date and time.
    #[error("invalid instant `{0}` (use ISO 8601 UTC, e.g. `2026-03-01T00:00Z`)")]
    Invalid(String),
    /// A valid instant, but not written in UTC.
    #[error("instant `{0}` is not in UTC: end it with `Z` (`2026-03-01T00:00Z`)")]
    NotUtc(String),
}

/// Parses an ISO 8601 instant in UTC: `2026-03-01T00:00Z`, `2026-03-01T00:00:00Z` (seconds
/// and fractions optional; the `Z` is required, so a point never depends on a time zone).
pub fn parse_instant(s: &str) -> Result<jiff::Timestamp, InstantError> {
    let t = s.trim();
    let ts: jiff::Timestamp = t.parse().map_err(|_| InstantError::Invalid(t.to_string()))?;
    if !(t.ends_with('Z') || t.ends_with('z')) {
        return Err(InstantError::NotUtc(t.to_string()));
    }
    Ok(ts)
}

/// Formats an instant as cycle points are shown: `2026-03-01T00:00:00Z`.
pub fn format_instant(t: jiff::Timestamp) -> String {
    let z = t.to_zoned(jiff::tz::TimeZone::UTC);
    jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", &z).unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("10").is_ok());
        assert!(parse_duration("5m3").is_err());
        assert!(parse_duration("-5").is_err());
        assert!(parse_duration("1e300").is_err());
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(20)), "20ms");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("4G").unwrap(), 4 << 30);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("4gb").unwrap(), 4 << 30);
        assert_eq!(parse_bytes("2 KiB").unwrap(), 2048);
        assert_eq!(parse_bytes("7B").unwrap(), 7);
        assert_eq!(parse_bytes("4Q").unwrap_err().to_string(), "invalid size `4Q`: unknown unit `Q` (use K, M, G, T)");
        assert_eq!(parse_bytes("G").unwrap_err(), SizeError::NotANumber("G".into()));
    }

    /// `4GBB`, `4GII`, `4IB` were read as `4G`, `4G` and `4` by stripping every trailing
    /// `B` and `I`: only one `B`, after an optional `i`, is a spelling of the unit.
    #[test]
    fn sizes_with_repeated_or_stray_suffixes_are_refused() {
        for bad in ["4GBB", "4GII", "4GIIB", "4IB", "4BB", "4GBi"] {
            let e = parse_bytes(bad).unwrap_err();
            assert!(matches!(e, SizeError::UnknownUnit { .. }), "{bad}: {e}");
        }
        assert_eq!(
            parse_bytes("4GBB").unwrap_err().to_string(),
            "invalid size `4GBB`: unknown unit `GBB` (use K, M, G, T)"
        );
    }

    #[test]
    fn signed_durations_and_instants() {
        assert_eq!(parse_signed_duration("+5m").unwrap(), jiff::SignedDuration::from_secs(300));
        assert_eq!(parse_signed_duration("-1h").unwrap(), jiff::SignedDuration::from_secs(-3600));
        assert_eq!(parse_signed_duration("0s").unwrap(), jiff::SignedDuration::ZERO);
        assert_eq!(
            parse_signed_duration("-5x").unwrap_err().to_string(),
            "invalid duration `-5x`: unknown unit `x` (use ms, s, m, h, d)"
        );
        assert!(parse_signed_duration("--5m").is_err());
        assert!(parse_signed_duration("-").is_err());
        let t = parse_instant("2026-03-01T00:00Z").unwrap();
        assert_eq!(t, parse_instant("2026-03-01T00:00:00Z").unwrap());
        assert_eq!(format_instant(t), "2026-03-01T00:00:00Z");
        assert_eq!(
            parse_instant("2026-03-01T00:00+01:00").unwrap_err(),
            InstantError::NotUtc("2026-03-01T00:00+01:00".into())
        );
        assert!(matches!(parse_instant("2026-13-01T00:00Z"), Err(InstantError::Invalid(_))));
        assert!(matches!(parse_instant("yesterday"), Err(InstantError::Invalid(_))));
        assert!(matches!(parse_instant("2026-03-01"), Err(InstantError::Invalid(_))));
    }

    #[test]
    fn duration_errors_keep_their_messages() {
        assert_eq!(parse_duration(" ").unwrap_err(), DurationError::Empty);
        assert_eq!(
            parse_duration("5 parsecs").unwrap_err().to_string(),
            "invalid duration `5 parsecs`: unknown unit `parsecs` (use ms, s, m, h, d)"
        );
        assert_eq!(
            parse_duration("5m3").unwrap_err().to_string(),
            "invalid duration `5m3`: a number needs a unit (`30s`, `10m`, `2h`)"
        );
        assert_eq!(
            parse_duration("-5").unwrap_err().to_string(),
            "invalid duration `-5`: a duration cannot be negative"
        );
        assert_eq!(parse_duration("-10m").unwrap_err(), DurationError::Negative("-10m".into()));
        assert_eq!(
            parse_duration("PT10M").unwrap_err().to_string(),
            "invalid duration `PT10M`: ISO 8601 durations are not read here; write `10m`, `1h30m`, `1d`"
        );
        assert_eq!(parse_duration("P1D").unwrap_err(), DurationError::Iso("P1D".into()));
        assert!(matches!(parse_signed_duration("--5m").unwrap_err(), DurationError::Invalid(_)));
    }
}
