//! Wall-clock formatting: RFC 5322 dates for headers and syslog-style stamps for logs.
//!
//! Pure functions of a Unix time; reading the clock is `crate::io::clock`'s business.

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// January's place in a year counted from March (Howard Hinnant's `civil_from_days`).
const JANUARY_FROM_MARCH: i64 = 10;
/// The last month that belongs to the year before in a year counted from March.
const FEBRUARY: u32 = 2;

/// A UTC calendar date and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 = Thursday (1970-01-01 was a Thursday).
    weekday: usize,
}

impl Civil {
    /// The calendar date of a Unix time (days-from-civil inverse, proleptic Gregorian).
    pub fn from_unix(secs: u64) -> Civil {
        let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
        let rem = secs % 86_400;
        // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        // The March-based month `mp` (0 = March) back to January-based: January and
        // February (mp 10 and 11) belong to the next year.
        let month = if mp < JANUARY_FROM_MARCH {
            mp + 3
        } else {
            mp - 9
        } as u32;
        let year = yoe + era * 400 + i64::from(month <= FEBRUARY);
        Civil {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem / 60 % 60) as u32,
            second: (rem % 60) as u32,
            weekday: (days.rem_euclid(7)) as usize,
        }
    }

    fn month_name(&self) -> &'static str {
        MONTHS[(self.month - 1) as usize]
    }
}

/// RFC 5322 §3.3 date-time in UTC: `Sat, 21 Nov 2026 21:41:41 +0000`.
pub fn rfc5322(secs: u64) -> String {
    let c = Civil::from_unix(secs);
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[c.weekday],
        c.day,
        c.month_name(),
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

/// The stamp Postfix's `mailq` shows for arrival: `Sat Nov 21 21:41:41`.
pub fn mailq_stamp(secs: u64) -> String {
    let c = Civil::from_unix(secs);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02}",
        DAYS[c.weekday],
        c.month_name(),
        c.day,
        c.hour,
        c.minute,
        c.second
    )
}

/// The syslog-style stamp Postfix logs start with: `Nov 21 21:41:41`.
pub fn syslog_stamp(secs: u64) -> String {
    let c = Civil::from_unix(secs);
    format!(
        "{} {:2} {:02}:{:02}:{:02}",
        c.month_name(),
        c.day,
        c.hour,
        c.minute,
        c.second
    )
}

/// RFC 3339 (as RFC 5424 §6.2.3 wants it for syslog) in UTC with microseconds:
/// `2026-11-21T21:41:41.000123Z`.
pub fn rfc3339_micros(micros: u64) -> String {
    let c = Civil::from_unix(micros / 1_000_000);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        micros % 1_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(rfc5322(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        // 2000-02-29 is a leap day in a century leap year.
        assert_eq!(rfc5322(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(rfc5322(1_795_297_301), "Sat, 21 Nov 2026 21:41:41 +0000");
        assert_eq!(rfc5322(4_102_444_799), "Thu, 31 Dec 2099 23:59:59 +0000");
        assert_eq!(syslog_stamp(1_795_297_301), "Nov 21 21:41:41");
        assert_eq!(mailq_stamp(1_795_297_301), "Sat Nov 21 21:41:41");
        assert_eq!(syslog_stamp(1_793_899_200), "Nov  5 17:20:00");
        assert_eq!(
            rfc3339_micros(1_795_297_301_000_123),
            "2026-11-21T21:41:41.000123Z"
        );
    }
}
