//! RFC 3339 timestamps to epoch milliseconds, strictly and without allocation.
//!
//! Every event carries a time, so this runs once per event: a general date-time parser
//! was a visible share of validation cost under callgrind. This one accepts exactly RFC
//! 3339's `date-time` (`T` or `t` separator, optional fraction of any length, `Z`/`z` or a
//! `±HH:MM` offset), checks day-of-month against the calendar, truncates the fraction to
//! milliseconds, and is cross-checked against the `time` crate in the tests.
//!
//! A leap second (`:60`, RFC 3339 §5.7) is accepted when it falls at 23:59 UTC (after the
//! offset is applied), and maps to the last millisecond of that minute (`23:59:59.999Z`):
//! epoch time has no 61st second, and this keeps the event inside the minute and the day
//! the client named, ordered after every other event of that minute.

use std::cell::Cell;

/// Parses an RFC 3339 date-time into milliseconds since the Unix epoch (may be negative).
pub fn parse_rfc3339_millis(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    // The fixed part, as an array: its indexing needs no bounds checks.
    let fixed: &[u8; 20] = b.get(..20)?.try_into().ok()?;
    let year = two_digits(fixed[0], fixed[1])? * 100 + two_digits(fixed[2], fixed[3])?;
    let month = two_digits(fixed[5], fixed[6])?;
    let day = two_digits(fixed[8], fixed[9])?;
    let hour = two_digits(fixed[11], fixed[12])?;
    let minute = two_digits(fixed[14], fixed[15])?;
    let second = two_digits(fixed[17], fixed[18])?;
    if fixed[4] != b'-'
        || fixed[7] != b'-'
        || !matches!(fixed[10], b'T' | b't')
        || fixed[13] != b':'
        || fixed[16] != b':'
    {
        return None;
    }
    if !(1..=12).contains(&month) {
        return None;
    }
    let (month_start, month_days) = month_on_calendar(year, month);
    if day < 1 || day > month_days || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut millis = 0;
    if b[at] == b'.' {
        at += 1;
        let start = at;
        while at < b.len() && b[at].is_ascii_digit() {
            if at - start < 3 {
                millis = millis * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        let taken = at - start;
        if taken == 0 {
            return None;
        }
        for _ in taken..3 {
            millis *= 10;
        }
    }
    let offset_minutes = match b.get(at)? {
        b'Z' | b'z' if at + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if at + 6 == b.len() && b[at + 3] == b':' => {
            let hours = two_digits(b[at + 1], b[at + 2])?;
            let minutes = two_digits(b[at + 4], b[at + 5])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let total = hours * 60 + minutes;
            if *sign == b'-' {
                -total
            } else {
                total
            }
        }
        _ => return None,
    };
    let (second, millis) = if second == 60 {
        let utc_minute_of_day = (hour * 60 + minute - offset_minutes).rem_euclid(24 * 60);
        if utc_minute_of_day != 23 * 60 + 59 {
            return None;
        }
        (59, 999)
    } else {
        (second, millis)
    };
    let days = month_start + day - 1;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1_000 + millis)
}

/// The number two ASCII digits write, if both are digits. Every field of a date-time is
/// two digits (the year, two pairs): a general digit loop, with a slice and a check per
/// byte, was 61 of the ~200 instructions an event time cost.
fn two_digits(tens: u8, ones: u8) -> Option<i64> {
    // A byte below b'0' wraps around to above 9.
    let (tens, ones) = (tens.wrapping_sub(b'0'), ones.wrapping_sub(b'0'));
    (tens < 10 && ones < 10).then(|| i64::from(tens * 10 + ones))
}

/// The day (since the epoch) month `month` of `year` starts on, and how many days it has.
///
/// The calendar arithmetic is a chain of dependent multiplications, nearly 2% of a
/// shard's time under 100-event requests (perf). The events of a request nearly always
/// fall in one month, so each thread keeps the last month it worked out.
fn month_on_calendar(year: i64, month: i64) -> (i64, i64) {
    thread_local! {
        /// The last (year * 16 + month) worked out, its first day and its length.
        static LAST_MONTH: Cell<(i64, i64, i64)> = const { Cell::new((i64::MIN, 0, 0)) };
    }
    // Unique for every year this parser reads (0 to 9999) and month (1 to 12).
    let key = year * 16 + month;
    LAST_MONTH.with(|last| {
        let (last_key, start, days) = last.get();
        if last_key == key {
            return (start, days);
        }
        let (start, days) = (days_from_civil(year, month, 1), days_in_month(year, month));
        last.set((key, start, days));
        (start, days)
    })
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let m = (month + 9) % 12;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    fn reference(s: &str) -> Option<i64> {
        let t = time::OffsetDateTime::parse(s, &Rfc3339).ok()?;
        Some(t.unix_timestamp_nanos().div_euclid(1_000_000) as i64)
    }

    #[test]
    fn known_values() {
        assert_eq!(parse_rfc3339_millis("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_millis("2024-01-01T01:00:00.250+01:00"),
            Some(1_704_067_200_250)
        );
        assert_eq!(
            parse_rfc3339_millis("2024-02-29t23:59:59.9999999z"),
            Some(1_709_251_199_999)
        );
        // Leap seconds: 23:59:60 UTC, directly or through an offset, is the minute's last ms.
        assert_eq!(
            parse_rfc3339_millis("2016-12-31T23:59:60Z"),
            parse_rfc3339_millis("2016-12-31T23:59:59.999Z")
        );
        assert_eq!(
            parse_rfc3339_millis("2016-12-31T23:59:60.5Z"),
            parse_rfc3339_millis("2016-12-31T23:59:59.999Z")
        );
        assert_eq!(
            parse_rfc3339_millis("1990-12-31T15:59:60-08:00"),
            parse_rfc3339_millis("1990-12-31T23:59:59.999Z")
        );
        for bad in [
            "2016-12-31T23:58:60Z",
            "2016-12-31T22:59:60Z",
            "2016-12-31T23:59:60+01:00",
            "2016-12-31T23:59:61Z",
            "2024-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01 00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0100",
            "2024-01-01T00:00:00+01:00x",
            "2024-1-01T00:00:00Z",
            "",
        ] {
            assert_eq!(parse_rfc3339_millis(bad), None, "{bad}");
        }
    }

    /// A byte that is not a digit, in any place a digit must be, refuses the time: bytes
    /// just below and above the digits, letters, separators and a multi-byte character.
    #[test]
    fn every_digit_place_takes_only_digits() {
        let valid = "2024-05-01T12:34:56.789+01:30";
        let digit_places: Vec<usize> = valid
            .bytes()
            .enumerate()
            .filter(|(at, b)| b.is_ascii_digit() && !(20..23).contains(at))
            .map(|(at, _)| at)
            .collect();
        assert_eq!(digit_places.len(), 18);
        for at in digit_places {
            for other in ["/", ":", "a", " ", "-", "\u{e9}"] {
                let s = format!("{}{}{}", &valid[..at], other, &valid[at + 1..]);
                assert_eq!(parse_rfc3339_millis(&s), None, "{s}");
                assert_eq!(reference(&s), None, "{s}");
            }
        }
    }

    /// Timestamps in a row share their month, as a request's events do, or change it
    /// to one of another length or year: the month kept from the one before must never
    /// decide the next one's days.
    #[test]
    fn months_in_a_row_agree_with_the_time_crate() {
        let months = [
            (2024, 2),
            (2023, 2),
            (2024, 2),
            (2000, 2),
            (1900, 2),
            (2024, 1),
            (2024, 4),
            (2025, 4),
            (1970, 1),
            (1969, 12),
            (2024, 12),
            (2025, 1),
        ];
        for (year, month) in months {
            for day in [1, 15, 28, 29, 30, 31, 32, 0, 31, 29] {
                let s = format!("{year:04}-{month:02}-{day:02}T12:34:56.789Z");
                assert_eq!(parse_rfc3339_millis(&s), reference(&s), "{s}");
            }
        }
    }

    /// Agrees with the `time` crate on many generated timestamps, valid and not.
    #[test]
    fn agrees_with_the_time_crate() {
        let mut rng = super::super::TestRng(0x1234_5678_9abc_def1);
        let mut next = |n: u64| rng.below(n);
        for _ in 0..50_000 {
            let frac = match next(4) {
                0 => String::new(),
                1 => format!(".{}", next(10)),
                2 => format!(".{:03}", next(1000)),
                _ => format!(".{:09}", next(1_000_000_000)),
            };
            let offset = match next(3) {
                0 => "Z".to_owned(),
                1 => format!("+{:02}:{:02}", next(24), next(60)),
                _ => format!("-{:02}:{:02}", next(24), next(60)),
            };
            let s = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{frac}{offset}",
                1 + next(9998),
                1 + next(12),
                1 + next(31),
                next(25),
                next(61),
                next(60),
            );
            assert_eq!(parse_rfc3339_millis(&s), reference(&s), "{s}");
        }
    }
}
