//! Sizes as people write them ("50GiB", "1.5 GB", "300M") and as we print them.

use crate::error::{Error, Result};

/// Parse a size: a number (decimals allowed) and an optional unit. Decimal
/// units are powers of 1000 (KB, MB, GB, TB), binary ones of 1024 (KiB, MiB,
/// GiB, TiB); a bare K/M/G/T means the binary unit, as in `dd` and `rsync`.
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = || {
        Error::usage(format!(
            "invalid size {:?}: use a number with an optional unit, e.g. 500MB, 50GiB or 1TiB",
            crate::names::escape(s)
        ))
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000_u64.pow(2),
        "gb" => 1000_u64.pow(3),
        "tb" => 1000_u64.pow(4),
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    if num.is_empty() || num.matches('.').count() > 1 {
        return Err(bad());
    }
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let int: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let mut total = int.checked_mul(mult).ok_or_else(bad)?;
    if !frac.is_empty() {
        // exact enough: at most 9 fractional digits
        let digits = &frac[..frac.len().min(9)];
        let f: u64 = digits.parse().map_err(|_| bad())?;
        let scale = 10_u64.pow(digits.len() as u32);
        let part = (u128::from(f) * u128::from(mult) / u128::from(scale)) as u64;
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    Ok(total)
}

/// A size for people: "0 B", "999 B", "1.5 KiB", "12.3 GiB".
pub fn human(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if v >= 100.0 {
        format!("{v:.0} {}", UNITS[i])
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_every_documented_unit() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("10B").unwrap(), 10);
        assert_eq!(parse_size("1KB").unwrap(), 1000);
        assert_eq!(parse_size("1 KiB").unwrap(), 1024);
        assert_eq!(parse_size("300MB").unwrap(), 300_000_000);
        assert_eq!(parse_size("50GiB").unwrap(), 50 << 30);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("2TiB").unwrap(), 2 << 40);
        assert_eq!(parse_size("1tb").unwrap(), 1_000_000_000_000);
        assert_eq!(parse_size("100M").unwrap(), 100 << 20);
        for bad in [
            "",
            "GiB",
            "1.2.3",
            "-1",
            "1 parsec",
            "99999999999999999999",
            "99999999TiB",
        ] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.message.contains("invalid size"), "{bad}: {e}");
        }
    }

    #[test]
    fn human_sizes_are_short() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(500 << 20), "500 MiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }
}
