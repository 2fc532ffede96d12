//! The Segment timestamp grammar: one parser and one formatter for the host
//! and every plugin.
//!
//! Segment's `timestamp`, `originalTimestamp`, `sentAt` and `receivedAt`
//! are ISO 8601 text. [`Timestamp::parse`] reads them into an instant
//! (seconds and nanoseconds since the Unix epoch);
//! [`Timestamp::to_rfc3339_millis`] and [`Timestamp::to_rfc3339_micros`]
//! write them back the way Segment and the warehouse do.
//!
//! # Grammar
//!
//! ```text
//! timestamp = date [ ("T" / "t" / " ") time [ offset ] ]
//! date      = YYYY "-" MM "-" DD                 ; a real Gregorian date
//! time      = hh ":" mm ":" ss [ "." 1*DIGIT ]   ; hh 00-23, mm 00-59, ss 00-60
//! offset    = "Z" / "z" / sign hh [ [":"] mm ]   ; hh 00-23, mm 00-59
//! sign      = "+" / "-" / "−" (U+2212)
//! ```
//!
//! - Whitespace around the text is ignored; nothing else may follow.
//! - A date-time without an offset is UTC; a date alone is its midnight in
//!   UTC ([`Timestamp::parse_date_time`] refuses a date alone).
//! - The fraction keeps its first nine digits (nanoseconds); more are
//!   ignored, not rounded.
//! - A leap second (`23:59:60`) is read as the start of the next second,
//!   as PostgreSQL and most clocks do.
//!
//! This is the union of what the three parsers it replaces accepted (the
//! host's RFC 3339 parse with a no-offset fallback, the warehouse's, and
//! the SDK's), minus what is not ISO 8601 (a 30th of February).

/// Seconds in a day.
const DAY_SECS: i64 = 86_400;
/// Nanoseconds in a second.
const NANOS: u32 = 1_000_000_000;

/// An instant, to the nanosecond: the result of parsing a Segment
/// timestamp. Ordered by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z (negative before).
    secs: i64,
    /// Nanoseconds into that second, below 1 000 000 000.
    nanos: u32,
}

/// Why a text is not a Segment timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// The text does not follow the grammar (see the [module docs](self)).
    #[error("not an ISO 8601 timestamp")]
    Syntax,
    /// It follows the grammar but names no real instant: month 13, the
    /// 30th of February, hour 24, an offset of 24 hours.
    #[error("ISO 8601 timestamp out of range")]
    OutOfRange,
    /// A date alone where a date and time is needed
    /// ([`Timestamp::parse_date_time`]).
    #[error("ISO 8601 date without a time")]
    DateOnly,
}

impl Timestamp {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const EPOCH: Timestamp = Timestamp { secs: 0, nanos: 0 };

    /// The instant `secs` seconds and `nanos` nanoseconds after the epoch;
    /// `nanos` of a second or more carry into the seconds (so a leap second
    /// as chrono represents it, nanoseconds ≥ 10⁹, becomes the next second).
    /// [`None`] on overflow.
    pub fn from_unix(secs: i64, nanos: u32) -> Option<Timestamp> {
        let secs = secs.checked_add(i64::from(nanos / NANOS))?;
        Some(Timestamp { secs, nanos: nanos % NANOS })
    }

    /// The instant `ms` milliseconds after the epoch (before it, if
    /// negative).
    pub fn from_unix_millis(ms: i64) -> Timestamp {
        let nanos = ms.rem_euclid(1000) as u32 * 1_000_000;
        Timestamp { secs: ms.div_euclid(1000), nanos }
    }

    /// The instant `us` microseconds after the epoch (before it, if
    /// negative).
    pub fn from_unix_micros(us: i64) -> Timestamp {
        let nanos = us.rem_euclid(1_000_000) as u32 * 1000;
        Timestamp { secs: us.div_euclid(1_000_000), nanos }
    }

    /// Whole seconds since the epoch, rounded down.
    pub fn unix_seconds(self) -> i64 {
        self.secs
    }

    /// Nanoseconds into the second, below 1 000 000 000.
    pub fn subsec_nanos(self) -> u32 {
        self.nanos
    }

    /// Milliseconds since the epoch, rounded down (saturating far outside
    /// years 0000-9999, which the grammar cannot express anyway).
    pub fn unix_millis(self) -> i64 {
        self.secs.saturating_mul(1000).saturating_add(i64::from(self.nanos / 1_000_000))
    }

    /// Microseconds since the epoch, rounded down (saturating as
    /// [`Timestamp::unix_millis`]).
    pub fn unix_micros(self) -> i64 {
        self.secs.saturating_mul(1_000_000).saturating_add(i64::from(self.nanos / 1000))
    }

    /// The same instant cut to whole microseconds (what SQL warehouses
    /// keep).
    pub fn truncated_to_micros(self) -> Timestamp {
        Timestamp { secs: self.secs, nanos: self.nanos - self.nanos % 1000 }
    }

    /// Parses a Segment timestamp: a date-time, or a date alone (its
    /// midnight, UTC). See the [module docs](self) for the grammar.
    ///
    /// # Errors
    ///
    /// [`TimeError::Syntax`] when `text` does not follow the grammar,
    /// [`TimeError::OutOfRange`] when it names no real instant.
    pub fn parse(text: &str) -> Result<Timestamp, TimeError> {
        parse(text.trim()).map(|(t, _)| t)
    }

    /// Parses a Segment timestamp that has a time of day: as
    /// [`Timestamp::parse`], but a date alone is refused.
    ///
    /// # Errors
    ///
    /// As [`Timestamp::parse`], and [`TimeError::DateOnly`] for a date
    /// without a time.
    pub fn parse_date_time(text: &str) -> Result<Timestamp, TimeError> {
        match parse(text.trim())? {
            (t, true) => Ok(t),
            (_, false) => Err(TimeError::DateOnly),
        }
    }

    /// ISO 8601 in UTC with milliseconds, as Segment writes timestamps:
    /// `2024-05-01T12:00:00.123Z` (finer digits are cut, not rounded).
    pub fn to_rfc3339_millis(self) -> String {
        self.format(3)
    }

    /// ISO 8601 in UTC with microseconds, as the embedded warehouse stores
    /// timestamps (so they sort as text): `2024-05-01T12:00:00.123456Z`.
    pub fn to_rfc3339_micros(self) -> String {
        self.format(6)
    }

    /// `self` in UTC with `digits` (at most 9) of fraction.
    fn format(self, digits: u32) -> String {
        let days = self.secs.div_euclid(DAY_SECS);
        let of_day = self.secs.rem_euclid(DAY_SECS);
        let (year, month, day) = civil_from_days(days);
        let (hour, minute, second) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
        let fraction = self.nanos / 10_u32.pow(9 - digits.min(9));
        let width = digits.min(9) as usize;
        if !(0..=9999).contains(&year) {
            return format!("{year:+05}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{fraction:0width$}Z");
        }
        // Every event gets a few of these at ingest: written digit by
        // digit, not through `format!`. Each field is in range here.
        let field = |n: i64| u32::try_from(n).unwrap_or(0);
        let mut out = Vec::with_capacity(21 + width);
        let fields =
            [(year, 4, b'-'), (month, 2, b'-'), (day, 2, b'T'), (hour, 2, b':'), (minute, 2, b':'), (second, 2, b'.')];
        for (n, w, then) in fields {
            push_digits(&mut out, field(n), w);
            out.push(then);
        }
        push_digits(&mut out, fraction, width);
        out.push(b'Z');
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Appends `n`'s last `width` decimal digits, zero-padded.
fn push_digits(out: &mut Vec<u8>, mut n: u32, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for digit in out[start..].iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

impl std::fmt::Display for Timestamp {
    /// As [`Timestamp::to_rfc3339_millis`].
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339_millis())
    }
}

impl std::str::FromStr for Timestamp {
    type Err = TimeError;

    /// As [`Timestamp::parse`].
    fn from_str(s: &str) -> Result<Timestamp, TimeError> {
        Timestamp::parse(s)
    }
}

/// Parses trimmed `s`; the flag says whether it had a time of day.
fn parse(s: &str) -> Result<(Timestamp, bool), TimeError> {
    let mut cursor = Cursor { s: s.as_bytes(), at: 0 };
    let year = cursor.digits(4)?;
    cursor.literal(b'-')?;
    let month = cursor.digits(2)?;
    cursor.literal(b'-')?;
    let day = cursor.digits(2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(TimeError::OutOfRange);
    }
    let days = days_from_civil(year, month, day);
    if cursor.done() {
        return Ok((Timestamp { secs: days * DAY_SECS, nanos: 0 }, false));
    }
    if !matches!(cursor.next(), Some(b'T' | b't' | b' ')) {
        return Err(TimeError::Syntax);
    }
    let hour = cursor.digits(2)?;
    cursor.literal(b':')?;
    let minute = cursor.digits(2)?;
    cursor.literal(b':')?;
    let second = cursor.digits(2)?;
    if hour > 23 || minute > 59 || second > 60 {
        return Err(TimeError::OutOfRange);
    }
    let nanos = if cursor.peek() == Some(b'.') {
        cursor.at += 1;
        cursor.fraction()?
    } else {
        0
    };
    let offset_secs = cursor.offset()?;
    if !cursor.done() {
        return Err(TimeError::Syntax);
    }
    // `second` may be 60: a leap second counts as the next second's start.
    let secs = days * DAY_SECS + hour * 3600 + minute * 60 + second - offset_secs;
    Ok((Timestamp { secs, nanos }, true))
}

/// A position in the text being parsed.
struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn done(&self) -> bool {
        self.at == self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn literal(&mut self, want: u8) -> Result<(), TimeError> {
        if self.next() == Some(want) { Ok(()) } else { Err(TimeError::Syntax) }
    }

    /// Exactly `n` ASCII digits, as a number.
    fn digits(&mut self, n: usize) -> Result<i64, TimeError> {
        let part = self.s.get(self.at..self.at + n).ok_or(TimeError::Syntax)?;
        let mut value = 0;
        for &b in part {
            if !b.is_ascii_digit() {
                return Err(TimeError::Syntax);
            }
            value = value * 10 + i64::from(b - b'0');
        }
        self.at += n;
        Ok(value)
    }

    /// One or more digits after the decimal point, as nanoseconds (digits
    /// past the ninth are skipped).
    fn fraction(&mut self) -> Result<u32, TimeError> {
        let start = self.at;
        let mut nanos = 0;
        while let Some(b) = self.peek().filter(u8::is_ascii_digit) {
            if self.at - start < 9 {
                nanos = nanos * 10 + u32::from(b - b'0');
            }
            self.at += 1;
        }
        let read = self.at - start;
        if read == 0 {
            return Err(TimeError::Syntax);
        }
        Ok(nanos * 10_u32.pow(9 - read.min(9) as u32))
    }

    /// The offset east of UTC in seconds; 0 when there is none.
    fn offset(&mut self) -> Result<i64, TimeError> {
        let rest = &self.s[self.at..];
        let (sign, len) = match rest {
            [] => return Ok(0),
            [b'Z' | b'z', ..] => {
                self.at += 1;
                return Ok(0);
            }
            [b'+', ..] => (1, 1),
            [b'-', ..] => (-1, 1),
            // U+2212 MINUS SIGN, which ISO 8601 prefers.
            [0xE2, 0x88, 0x92, ..] => (-1, 3),
            _ => return Err(TimeError::Syntax),
        };
        self.at += len;
        let hours = self.digits(2)?;
        let minutes = match self.peek() {
            None => 0,
            Some(b':') => {
                self.at += 1;
                self.digits(2)?
            }
            Some(_) => self.digits(2)?,
        };
        if hours > 23 || minutes > 59 {
            return Err(TimeError::OutOfRange);
        }
        Ok(sign * (hours * 3600 + minutes * 60))
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a day count since 1970-01-01: the inverse of
/// [`days_from_civil`] (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> Option<i64> {
        Timestamp::parse(s).ok().map(Timestamp::unix_millis)
    }

    fn utc_micros(s: &str) -> Option<String> {
        Timestamp::parse_date_time(s).ok().map(Timestamp::to_rfc3339_micros)
    }

    /// The SDK's parser's cases.
    #[test]
    fn milliseconds_since_the_epoch() {
        assert_eq!(ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(ms("2024-05-01T12:00:00.123Z"), Some(1_714_564_800_123));
        assert_eq!(ms("2024-05-01T14:00:00.123+02:00"), Some(1_714_564_800_123));
        assert_eq!(ms("2024-05-01T07:30:00-0430"), Some(1_714_564_800_000));
        assert_eq!(ms("2024-05-01T12:00:00.1234567Z"), Some(1_714_564_800_123));
        assert_eq!(ms("2024-05-01"), Some(1_714_521_600_000));
        assert_eq!(ms("1969-12-31T23:59:59Z"), Some(-1000));
        assert_eq!(ms(" 2024-05-01T12:00:00Z\n"), Some(1_714_564_800_000), "surrounding whitespace is ignored");
    }

    /// The warehouse parser's cases.
    #[test]
    fn date_times_in_utc_to_the_microsecond() {
        assert_eq!(utc_micros("2024-05-01T12:00:00Z").as_deref(), Some("2024-05-01T12:00:00.000000Z"));
        assert_eq!(utc_micros("2024-05-01 12:00:00.5+02:00").as_deref(), Some("2024-05-01T10:00:00.500000Z"));
        assert_eq!(utc_micros("2024-05-01t12:00:00.1234567-0130").as_deref(), Some("2024-05-01T13:30:00.123456Z"));
        assert_eq!(utc_micros("2024-05-01T12:00:00+01").as_deref(), Some("2024-05-01T11:00:00.000000Z"));
        assert_eq!(utc_micros("2024-05-01T12:00:00").as_deref(), Some("2024-05-01T12:00:00.000000Z"));
        assert_eq!(utc_micros("2016-12-31T23:59:60Z").as_deref(), Some("2017-01-01T00:00:00.000000Z"));
        assert_eq!(utc_micros("2024-05-01T12:00:00\u{2212}01:00").as_deref(), Some("2024-05-01T13:00:00.000000Z"));
        assert_eq!(Timestamp::parse_date_time("2024-05-01"), Err(TimeError::DateOnly));
    }

    #[test]
    fn what_is_not_a_timestamp() {
        for bad in [
            "",
            "abc",
            "yesterday",
            "noon",
            "2024-5-01",
            "2024-05-01T12:00",
            "2024-05-01T12:00:00.",
            "2024-05-01T12:00:00Zjunk",
            "2024-05-01T12:00:00Zx",
            "2024-05-01T12:00:00+1",
            "2024-05-01T12:00:00+01:0",
            "2024-05-01T12:00:00+0100junk",
            "2024-05-01X12:00:00Z",
            "2024-05-01T",
        ] {
            assert_eq!(Timestamp::parse(bad), Err(TimeError::Syntax), "{bad}");
        }
        for out in [
            "2024-13-01T00:00:00Z",
            "2024-02-30T12:00:00Z",
            "2023-02-29",
            "2024-05-01T25:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:60:00Z",
            "2024-05-01T12:00:61Z",
            "2024-05-01T12:00:00+24:00",
        ] {
            assert_eq!(Timestamp::parse(out), Err(TimeError::OutOfRange), "{out}");
        }
        assert!(Timestamp::parse("2024-02-29").is_ok(), "a leap day");
    }

    #[test]
    fn formats_as_segment_writes_timestamps() {
        let t = Timestamp::parse("2024-05-01T14:00:05.123456789+02:00").ok();
        assert_eq!(t.map(Timestamp::to_rfc3339_millis).as_deref(), Some("2024-05-01T12:00:05.123Z"));
        assert_eq!(t.map(Timestamp::to_rfc3339_micros).as_deref(), Some("2024-05-01T12:00:05.123456Z"));
        assert_eq!(Timestamp::from_unix_millis(-1).to_rfc3339_millis(), "1969-12-31T23:59:59.999Z");
        assert_eq!(Timestamp::from_unix_micros(-1).to_rfc3339_micros(), "1969-12-31T23:59:59.999999Z");
        assert_eq!(Timestamp::EPOCH.to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp::from_unix(59, 1_500_000_000).map(Timestamp::unix_millis), Some(60_500));
    }

    #[test]
    fn formatting_round_trips_across_the_calendar() {
        // Every 997th day of years 0000-9999.
        for days in (days_from_civil(0, 1, 1)..=days_from_civil(9999, 12, 31)).step_by(997) {
            let t = Timestamp { secs: days * DAY_SECS + 45_296, nanos: 789_000_000 };
            let text = t.to_rfc3339_millis();
            assert_eq!(Timestamp::parse(&text), Ok(t), "{text}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
    }

    #[test]
    fn conversions() {
        let t = Timestamp::parse("2024-05-01T12:00:00.1234567Z").ok();
        assert_eq!(t.map(Timestamp::unix_micros), Some(1_714_564_800_123_456));
        assert_eq!(t.map(|t| t.truncated_to_micros().subsec_nanos()), Some(123_456_000));
        assert_eq!(t.map(Timestamp::unix_seconds), Some(1_714_564_800));
        assert_eq!("1970-01-01".parse::<Timestamp>(), Ok(Timestamp::EPOCH));
        assert_eq!(
            Timestamp::from_unix_millis(1_714_564_800_123),
            Timestamp::from_unix(1_714_564_800, 123_000_000).unwrap_or(Timestamp::EPOCH)
        );
    }
}
