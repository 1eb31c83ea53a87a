//! RPM version comparison, as `rpmvercmp()` and `rpmverCmp()` in librpm do it,
//! so that `rpm.vercmp()` in lua scriptlets and our own ordering of packages
//! agree with what rpm would decide.

use std::cmp::Ordering;

/// Compares two version (or release) strings the way rpm's `rpmvercmp` does.
///
/// Both strings are split into runs of ASCII digits and runs of ASCII letters;
/// everything else only separates runs. Runs are compared pairwise: numbers
/// numerically (leading zeros ignored, any length), letters bytewise, and a
/// number is newer than letters. `~` sorts before anything, even the end of
/// the string (`1.0~rc1` < `1.0`); `^` sorts after the end of the string but
/// before anything else (`1.0` < `1.0^git1` < `1.0.1`).
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (one, two) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let is_sep = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';

    while i < one.len() || j < two.len() {
        while i < one.len() && is_sep(one[i]) {
            i += 1;
        }
        while j < two.len() && is_sep(two[j]) {
            j += 1;
        }
        let c1 = one.get(i).copied();
        let c2 = two.get(j).copied();

        // Tilde sorts before everything else, including the end.
        if c1 == Some(b'~') || c2 == Some(b'~') {
            if c1 != Some(b'~') {
                return Ordering::Greater;
            }
            if c2 != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }

        // Caret is like tilde, except that the end of a string (the base
        // version) sorts before it.
        if c1 == Some(b'^') || c2 == Some(b'^') {
            match (c1, c2) {
                (None, _) => return Ordering::Less,
                (_, None) => return Ordering::Greater,
                (Some(x), _) if x != b'^' => return Ordering::Greater,
                (_, Some(y)) if y != b'^' => return Ordering::Less,
                _ => {}
            }
            i += 1;
            j += 1;
            continue;
        }

        // Ran out of one of them: decided after the loop.
        let (Some(first), Some(_)) = (c1, c2) else {
            break;
        };

        let isnum = first.is_ascii_digit();
        let class: fn(&u8) -> bool = if isnum {
            u8::is_ascii_digit
        } else {
            u8::is_ascii_alphabetic
        };
        let end1 = i + one[i..].iter().take_while(|c| class(c)).count();
        let end2 = j + two[j..].iter().take_while(|c| class(c)).count();
        let seg1 = &one[i..end1];
        let seg2 = &two[j..end2];

        // Segments of different kinds: the numeric one is newer.
        if seg2.is_empty() {
            return if isnum { Ordering::Greater } else { Ordering::Less };
        }

        let ord = if isnum {
            let s1 = strip_zeros(seg1);
            let s2 = strip_zeros(seg2);
            s1.len().cmp(&s2.len()).then_with(|| s1.cmp(s2))
        } else {
            seg1.cmp(seg2)
        };
        if ord != Ordering::Equal {
            return ord;
        }
        i = end1;
        j = end2;
    }

    match (i >= one.len(), j >= two.len()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

fn strip_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&c| c == b'0').count();
    &s[n..]
}

/// Compares two `[epoch:]version[-release]` strings like rpm's `rpmverCmp`:
/// a missing epoch is 0, and the releases are compared only when both
/// strings have one (so `1.0` equals `1.0-3`).
pub fn evrcmp(a: &str, b: &str) -> Ordering {
    let (e1, v1, r1) = parse_evr(a);
    let (e2, v2, r2) = parse_evr(b);
    rpmvercmp(e1, e2)
        .then_with(|| rpmvercmp(v1, v2))
        .then_with(|| match (r1, r2) {
            (Some(r1), Some(r2)) => rpmvercmp(r1, r2),
            _ => Ordering::Equal,
        })
}

/// Splits `[epoch:]version[-release]` as rpm's `parseEVR`: the epoch is the
/// leading digits when a `:` follows them (empty means 0), the release is
/// whatever follows the last `-`.
fn parse_evr(evr: &str) -> (&str, &str, Option<&str>) {
    let digits = evr.bytes().take_while(u8::is_ascii_digit).count();
    let (epoch, rest) = match evr[digits..].strip_prefix(':') {
        Some(rest) if digits == 0 => ("0", rest),
        Some(rest) => (&evr[..digits], rest),
        None => ("0", evr),
    };
    match rest.rfind('-') {
        Some(dash) => (epoch, &rest[..dash], Some(&rest[dash + 1..])),
        None => (epoch, rest, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rpm's own vectors, from `tests/rpmvercmp.at`.
    const VECTORS: &[(&str, &str, i32)] = &[
        ("1.0", "1.0", 0),
        ("1.0", "2.0", -1),
        ("2.0", "1.0", 1),
        ("2.0.1", "2.0.1", 0),
        ("2.0", "2.0.1", -1),
        ("2.0.1", "2.0", 1),
        ("2.0.1a", "2.0.1a", 0),
        ("2.0.1a", "2.0.1", 1),
        ("2.0.1", "2.0.1a", -1),
        ("5.5p1", "5.5p1", 0),
        ("5.5p1", "5.5p2", -1),
        ("5.5p2", "5.5p1", 1),
        ("5.5p10", "5.5p10", 0),
        ("5.5p1", "5.5p10", -1),
        ("5.5p10", "5.5p1", 1),
        ("10xyz", "10.1xyz", -1),
        ("10.1xyz", "10xyz", 1),
        ("xyz10", "xyz10", 0),
        ("xyz10", "xyz10.1", -1),
        ("xyz10.1", "xyz10", 1),
        ("xyz.4", "xyz.4", 0),
        ("xyz.4", "8", -1),
        ("8", "xyz.4", 1),
        ("xyz.4", "2", -1),
        ("2", "xyz.4", 1),
        ("5.5p2", "5.6p1", -1),
        ("5.6p1", "5.5p2", 1),
        ("5.6p1", "6.5p1", -1),
        ("6.5p1", "5.6p1", 1),
        ("6.0.rc1", "6.0", 1),
        ("6.0", "6.0.rc1", -1),
        ("10b2", "10a1", 1),
        ("10a2", "10b2", -1),
        ("1.0aa", "1.0aa", 0),
        ("1.0a", "1.0aa", -1),
        ("1.0aa", "1.0a", 1),
        ("10.0001", "10.0001", 0),
        ("10.0001", "10.1", 0),
        ("10.1", "10.0001", 0),
        ("10.0001", "10.0039", -1),
        ("10.0039", "10.0001", 1),
        ("4.999.9", "5.0", -1),
        ("5.0", "4.999.9", 1),
        ("20101121", "20101121", 0),
        ("20101121", "20101122", -1),
        ("20101122", "20101121", 1),
        ("2_0", "2_0", 0),
        ("2.0", "2_0", 0),
        ("2_0", "2.0", 0),
        ("a", "a", 0),
        ("a+", "a+", 0),
        ("a+", "a_", 0),
        ("a_", "a+", 0),
        ("+a", "+a", 0),
        ("+a", "_a", 0),
        ("_a", "+a", 0),
        ("+_", "+_", 0),
        ("_+", "+_", 0),
        ("_+", "_+", 0),
        ("+", "_", 0),
        ("_", "+", 0),
        ("1.0~rc1", "1.0~rc1", 0),
        ("1.0~rc1", "1.0", -1),
        ("1.0", "1.0~rc1", 1),
        ("1.0~rc1", "1.0~rc2", -1),
        ("1.0~rc2", "1.0~rc1", 1),
        ("1.0~rc1~git123", "1.0~rc1~git123", 0),
        ("1.0~rc1~git123", "1.0~rc1", -1),
        ("1.0~rc1", "1.0~rc1~git123", 1),
        // Caret, from rpm's later additions to the same file.
        ("1.0^", "1.0^", 0),
        ("1.0^", "1.0", 1),
        ("1.0", "1.0^", -1),
        ("1.0^git1", "1.0^git1", 0),
        ("1.0^git1", "1.0", 1),
        ("1.0", "1.0^git1", -1),
        ("1.0^git1", "1.0^git2", -1),
        ("1.0^git2", "1.0^git1", 1),
        ("1.0^git1", "1.01", -1),
        ("1.01", "1.0^git1", 1),
        ("1.0^20160101", "1.0^20160101", 0),
        ("1.0^20160101", "1.0.1", -1),
        ("1.0.1", "1.0^20160101", 1),
        ("1.0^20160101^git1", "1.0^20160101^git1", 0),
        ("1.0^20160102", "1.0^20160101^git1", 1),
        ("1.0^20160101^git1", "1.0^20160102", -1),
        ("1.0~rc1^git1", "1.0~rc1^git1", 0),
        ("1.0~rc1^git1", "1.0~rc1", 1),
        ("1.0~rc1", "1.0~rc1^git1", -1),
        ("1.0^git1~pre", "1.0^git1~pre", 0),
        ("1.0^git1", "1.0^git1~pre", 1),
        ("1.0^git1~pre", "1.0^git1", -1),
    ];

    fn sign(o: Ordering) -> i32 {
        match o {
            Ordering::Less => -1,
            Ordering::Equal => 0,
            Ordering::Greater => 1,
        }
    }

    #[test]
    fn rpm_test_vectors() {
        let failed: Vec<_> = VECTORS
            .iter()
            .filter(|(a, b, want)| sign(rpmvercmp(a, b)) != *want)
            .map(|(a, b, want)| format!("rpmvercmp({a:?}, {b:?}) = {} want {want}", sign(rpmvercmp(a, b))))
            .collect();
        assert!(failed.is_empty(), "{failed:#?}");
    }

    #[test]
    fn long_numbers_do_not_overflow() {
        assert_eq!(rpmvercmp("1.123456789012345678901234567890", "1.99"), Ordering::Greater);
        assert_eq!(rpmvercmp("000000000000000000000000001", "1"), Ordering::Equal);
    }

    #[test]
    fn evr() {
        let cases: &[(&str, &str, i32)] = &[
            ("1.0-1", "1.0-1", 0),
            ("1.0-1", "1.0-2", -1),
            ("1.2-1", "2.0-1", -1),
            ("1:1.0-1", "2.0-1", 1),
            ("0:1.0-1", "1.0-1", 0),
            (":1.0", "1.0", 0),
            ("1.0", "1.0-5", 0),
            ("2:1.0", "10:0.1", -1),
            ("1.0-1.fc40", "1.0-1.fc41", -1),
            ("1.0~rc1-1", "1.0-1", -1),
            ("5.1-2-3", "5.1-2-4", -1),
        ];
        for (a, b, want) in cases {
            assert_eq!(sign(evrcmp(a, b)), *want, "evrcmp({a:?}, {b:?})");
        }
    }

    #[test]
    fn evr_parse() {
        assert_eq!(parse_evr("3:1.2-4"), ("3", "1.2", Some("4")));
        assert_eq!(parse_evr("1.2"), ("0", "1.2", None));
        assert_eq!(parse_evr("a:1.2"), ("0", "a:1.2", None));
    }
}
