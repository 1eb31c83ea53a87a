//! rpm-ostree's automatic commit versions (`automatic-version-prefix`): the
//! same sequence rpm-ostree's `util_next_version` gives, so a tree moved from
//! rpm-ostree to arbor keeps counting where it was.
//!
//! A plain prefix `22` gives `22`, `22.1`, `22.2`, …; a prefix with a date tag
//! `22.<date:%Y%m%d>` gives `22.20240101.0`, `22.20240101.1`, … and starts
//! again at `.0` when the date (or anything else in the prefix) changes.

use anyhow::{Result, bail};

/// The character between the prefix and the counter (rpm-ostree's default
/// `automatic-version-suffix`, which arbor does not implement yet).
const SUFFIX: char = '.';

/// What a treefile without `automatic-version-prefix` is versioned by: the
/// date, counted from `.0` (rpm-ostree gives such commits no version at all).
const DEFAULT_PREFIX: &str = "<date:%Y%m%d>";

/// The version of the next commit on a ref whose current commit has
/// `previous`; `date` (seconds since the epoch) fills the prefix's
/// `<date:FORMAT>` tag: the compose date, see [`compose_date`].
pub fn next_version(prefix: Option<&str>, previous: Option<&str>, date: u64) -> Result<String> {
    let (prefix, dated) = expand_tags(prefix.unwrap_or(DEFAULT_PREFIX), date)?;
    let previous = previous.filter(|p| !p.is_empty());
    // A dated prefix always carries a counter, starting at 0; a plain one gets
    // `.1` only on its second commit.
    let start = dated.then_some(0u64);
    let fresh = match start {
        Some(n) => format!("{prefix}{SUFFIX}{n}"),
        None => prefix.clone(),
    };
    let Some(rest) = previous.and_then(|p| p.strip_prefix(prefix.as_str())) else {
        return Ok(fresh);
    };
    if rest.is_empty() {
        return Ok(match start {
            Some(_) => fresh,
            None => format!("{prefix}{SUFFIX}1"),
        });
    }
    let Some(counter) = rest.strip_prefix(SUFFIX) else {
        // `10` after `101.1`: another prefix that merely starts the same way.
        return Ok(fresh);
    };
    // As strtoull: the leading digits, 0 when there are none (`10.1.x` → `10.1.1`).
    let digits: &str = &counter[..counter.bytes().take_while(u8::is_ascii_digit).count()];
    let n = digits
        .parse::<u64>()
        .unwrap_or(if digits.is_empty() { 0 } else { u64::MAX });
    Ok(format!("{prefix}{SUFFIX}{}", n.saturating_add(1)))
}

/// `SOURCE_DATE_EPOCH` when set (reproducible builds), else the current time:
/// the date a version's `<date:…>` tag shows.
pub fn compose_date() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => parse_epoch(&s),
        Err(_) => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)),
    }
}

/// Parses a `SOURCE_DATE_EPOCH` value.
pub fn parse_epoch(s: &str) -> Result<u64> {
    match s.trim().parse() {
        Ok(n) => Ok(n),
        Err(_) => bail!(
            "SOURCE_DATE_EPOCH={:?} is not a number of seconds",
            s.chars().take(40).collect::<String>()
        ),
    }
}

/// Replaces the prefix's tag — rpm-ostree's `<([a-zA-Z]+):(.*)?>`, greedy, so
/// it runs to the last `>` — when it is `date`; other tags stay as written,
/// as rpm-ostree leaves them. Returns whether a date tag was expanded.
fn expand_tags(prefix: &str, date: u64) -> Result<(String, bool)> {
    let Some((start, name_end)) = find_tag(prefix) else {
        return Ok((prefix.to_string(), false));
    };
    let Some(end) = prefix.rfind('>').filter(|&e| e > name_end) else {
        return Ok((prefix.to_string(), false));
    };
    let name = &prefix[start + 1..name_end];
    if name != "date" {
        tracing::warn!(
            tag = name,
            "automatic-version-prefix: ignoring the unknown tag <{name}:…>"
        );
        return Ok((prefix.to_string(), false));
    }
    let rendered = format_date(&prefix[name_end + 1..end], date)?;
    Ok((format!("{}{rendered}{}", &prefix[..start], &prefix[end + 1..]), true))
}

/// The first `<` followed by letters and `:`: its offset and that of the `:`.
fn find_tag(s: &str) -> Option<(usize, usize)> {
    s.match_indices('<').find_map(|(i, _)| {
        let letters = s[i + 1..].bytes().take_while(u8::is_ascii_alphabetic).count();
        let colon = i + 1 + letters;
        (letters > 0 && s.as_bytes().get(colon) == Some(&b':')).then_some((i, colon))
    })
}

const WEEKDAYS: [&str; 7] = [
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The conversions [`format_date`] knows (GLib's `g_date_time_format`, which
/// rpm-ostree uses, in the C locale and UTC).
const CONVERSIONS: &str = "%Y %y %C %m %d %e %j %H %M %S %F %T %s %a %A %b %B %u %%";

/// Renders a strftime-style `fmt` for `secs` (UTC). A conversion outside
/// [`CONVERSIONS`] is an error, as rpm-ostree refuses a format GLib cannot render.
fn format_date(fmt: &str, secs: u64) -> Result<String> {
    let days = (secs / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    let weekday = days.rem_euclid(7) as usize;
    let ordinal = days - days_from_civil(y, 1, 1) + 1;
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let conv = chars.next();
        let piece = match conv {
            Some('Y') => format!("{y}"),
            Some('y') => format!("{:02}", y.rem_euclid(100)),
            Some('C') => format!("{:02}", y.div_euclid(100)),
            Some('m') => format!("{m:02}"),
            Some('d') => format!("{d:02}"),
            Some('e') => format!("{d:2}"),
            Some('j') => format!("{ordinal:03}"),
            Some('H') => format!("{hh:02}"),
            Some('M') => format!("{mm:02}"),
            Some('S') => format!("{ss:02}"),
            Some('F') => format!("{y}-{m:02}-{d:02}"),
            Some('T') => format!("{hh:02}:{mm:02}:{ss:02}"),
            Some('s') => format!("{secs}"),
            Some('a') => WEEKDAYS[weekday][..3].to_string(),
            Some('A') => WEEKDAYS[weekday].to_string(),
            Some('b') => MONTHS[m as usize - 1][..3].to_string(),
            Some('B') => MONTHS[m as usize - 1].to_string(),
            // ISO weekday, Monday = 1; the epoch was a Thursday.
            Some('u') => format!("{}", (weekday + 3) % 7 + 1),
            Some('%') => "%".to_string(),
            Some(other) => bail!(
                "automatic-version-prefix: the date format %{other} in <date:{}> is not supported (supported: {CONVERSIONS})",
                fmt.chars().take(40).collect::<String>()
            ),
            None => bail!("automatic-version-prefix: the date format <date:{fmt}> ends in a lone %"),
        };
        out.push_str(&piece);
    }
    Ok(out)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

/// (year, month, day) → days since 1970-01-01, the inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-01-01T00:00:00Z.
    const JAN1: u64 = 1_704_067_200;
    /// 2024-03-05T13:07:09Z, a Tuesday.
    const MAR5: u64 = 1_709_644_029;

    #[test]
    fn plain_prefixes_count_as_rpm_ostree_does() {
        // (prefix, previous version, next version): rpm-ostree's test_next_version.
        let cases = [
            ("10", None, "10"),
            ("10", Some(""), "10"),
            ("10", Some("xyz"), "10"),
            ("10", Some("9"), "10"),
            ("10", Some("11"), "10"),
            ("10", Some("10"), "10.1"),
            ("10.1", Some("10.1"), "10.1.1"),
            ("10", Some("10.0"), "10.1"),
            ("10", Some("10.1"), "10.2"),
            ("10", Some("10.3"), "10.4"),
            ("10", Some("10.1.5"), "10.2"),
            ("10.1", Some("10.1.5"), "10.1.6"),
            ("10.1", Some("10.1.1.5"), "10.1.2"),
            ("10", Some("10001"), "10"),
            ("10", Some("101.1"), "10"),
            ("10", Some("10x.1"), "10"),
            ("10.1", Some("10"), "10.1"),
            ("10.1", Some("10."), "10.1"),
            ("10.1", Some("10.0"), "10.1"),
            ("10.1", Some("10.12"), "10.1"),
            ("10.1", Some("10.1x"), "10.1"),
            ("10.1", Some("10.1.x"), "10.1.1"),
            ("10.1", Some("10.1.2x"), "10.1.3"),
        ];
        for (prefix, previous, want) in cases {
            assert_eq!(
                next_version(Some(prefix), previous, JAN1).unwrap(),
                want,
                "prefix {prefix:?} after {previous:?}"
            );
        }
    }

    #[test]
    fn dated_prefixes_start_at_0_and_restart_when_the_date_changes() {
        let cases = [
            // The treefile: `.dev.0`, `.dev.1`, never a bare `.dev`.
            ("40.<date:%Y%m%d>.dev", None, "40.20240101.dev.0"),
            ("40.<date:%Y%m%d>.dev", Some("40.20240101.dev.0"), "40.20240101.dev.1"),
            ("40.<date:%Y%m%d>.dev", Some("40.20240101.dev.1"), "40.20240101.dev.2"),
            ("40.<date:%Y%m%d>.dev", Some("40.20231231.dev.7"), "40.20240101.dev.0"),
            // The rest of rpm-ostree's test_next_version, on a fixed date.
            ("10.<date:%Y%m%d>", Some("10.20001010"), "10.20240101.0"),
            ("10.<date:%Y%m%d>", Some("10.20001010.5"), "10.20240101.0"),
            ("10.<date:%Y%m%d>", Some("10.20240101.1"), "10.20240101.2"),
            ("10.<date:%Y%m%d>", None, "10.20240101.0"),
            ("10.<date:%Y%m%d>", Some("10.20240101"), "10.20240101.0"),
            ("10.<date:%Y%m%d>", Some("10"), "10.20240101.0"),
            ("10.<date:%Y%m%d>.0", Some("10.20240101"), "10.20240101.0.0"),
            ("10.<date:%Y%m%d>.0", Some("10.20240101.0"), "10.20240101.0.0"),
            ("10.<date:%Y%m%d>", Some("10.20240101.x"), "10.20240101.1"),
            ("10.<date:%Y%m%d>.2", Some("10.20240101.2.x"), "10.20240101.2.1"),
            ("10.<date:%Y%m%d>.1", Some("10.20240101.1.2x"), "10.20240101.1.3"),
            ("10.<date: %Y%m%d>", Some("10.20001010"), "10. 20240101.0"),
            ("10.<date:%Y%m%d>.", Some("10.20001010."), "10.20240101..0"),
            ("10.<date:%Y%m%d>abc", Some("10.20001010abc"), "10.20240101abc.0"),
            ("10.<date:text %Y%m%d here>", None, "10.text 20240101 here.0"),
            ("10.<date: >", Some("10.20001010"), "10. .0"),
            ("10.<date:>", Some("10.20001010"), "10..0"),
            ("10.<wrongtag: >", Some("10.20001010"), "10.<wrongtag: >"),
            // rpm-ostree's documented progressions.
            ("22.<date:%Y>", Some("22.2024.0"), "22.2024.1"),
            ("22.<date:%Y>.1", Some("22.2023.1.4"), "22.2024.1.0"),
        ];
        for (prefix, previous, want) in cases {
            assert_eq!(
                next_version(Some(prefix), previous, JAN1).unwrap(),
                want,
                "prefix {prefix:?} after {previous:?}"
            );
        }
        // No prefix: the date, counted from 0 (arbor's default).
        assert_eq!(next_version(None, None, JAN1).unwrap(), "20240101.0");
        assert_eq!(next_version(None, Some("20240101.0"), JAN1).unwrap(), "20240101.1");
        assert_eq!(next_version(None, Some("20231231.4"), JAN1).unwrap(), "20240101.0");
    }

    #[test]
    fn date_formats_render_in_utc_and_unknown_ones_are_refused() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        for days in [-800_000, -1, 0, 59, 19_723, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(
            format_date("%Y-%m-%d %H:%M:%S %j %y %C %e", MAR5).unwrap(),
            "2024-03-05 13:07:09 065 24 20  5"
        );
        assert_eq!(
            format_date("%F %T %s %%", MAR5).unwrap(),
            "2024-03-05 13:07:09 1709644029 %"
        );
        assert_eq!(format_date("%a %A %b %B %u", MAR5).unwrap(), "Tue Tuesday Mar March 2");
        assert_eq!(format_date("%a %u", 0).unwrap(), "Thu 4");
        let e = next_version(Some("10.<date:%E>"), Some("10.20001010"), JAN1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("%E") && e.contains("supported: %Y"), "{e}");
        assert!(format_date("%", 0).unwrap_err().to_string().contains("lone %"));
    }

    #[test]
    fn source_date_epoch_values_are_checked() {
        assert_eq!(parse_epoch(" 1704067200\n").unwrap(), JAN1);
        let e = parse_epoch("yesterday").unwrap_err().to_string();
        assert!(e.contains("SOURCE_DATE_EPOCH=\"yesterday\""), "{e}");
    }
}
