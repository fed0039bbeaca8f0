//! Durations (`90s`, `10m`, `1h30m`) and sizes (`512M`, `4G`) as written in workflows.

use std::time::Duration;

/// Parses a duration: a number of seconds, or numbers with units `ms`, `s`, `m`, `h`, `d`
/// concatenated (`1h30m`). Returns a message on failure.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return secs_to_duration(secs).ok_or_else(|| format!("invalid duration `{s}`"));
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
                return Err(format!("invalid duration `{s}`: unknown unit `{word}` (use ms, s, m, h, d)"));
            }
        };
        let n: f64 = num.parse().map_err(|_| format!("invalid duration `{s}`"))?;
        total += n * unit;
        num.clear();
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(format!("invalid duration `{s}`: a number needs a unit (`30s`, `10m`, `2h`)"));
    }
    secs_to_duration(total).ok_or_else(|| format!("invalid duration `{s}`"))
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

/// Parses a size in bytes: `1024`, `512K`, `512M`, `4G`, `1T` (binary multiples; `KiB`,
/// `MB`, ... spellings are accepted and also read as binary, like SLURM's `--mem`).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid size `{s}` (use e.g. `512M`, `4G`)"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().trim_end_matches('B').trim_end_matches('I') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        other => return Err(format!("invalid size `{s}`: unknown unit `{other}` (use K, M, G, T)")),
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > (1u64 << 60) as f64 {
        return Err(format!("invalid size `{s}`"));
    }
    Ok(bytes as u64)
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
        assert!(parse_bytes("4Q").is_err());
        assert!(parse_bytes("G").is_err());
    }
}
