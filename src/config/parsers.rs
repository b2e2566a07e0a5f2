//! The clap value parsers that turn a setting's text into its typed value.
//!
//! A setting's flag or environment variable arrives as text; clap hands it
//! (or the field's textual default) to the field's parser, which gives the
//! typed value the rest of the code uses: a [`Duration`] read in the unit
//! the variable's name states (`_MS` or `_SECS`), or a `NonZero*` count.
//! A value that cannot work (not a whole number, or 0 where 0 means
//! nothing) is refused here with a message naming the environment
//! variable, so clap stops the start (exit code 2) before anything runs
//! and no hand-kept list of checks is needed.

use std::ffi::OsStr;
use std::marker::PhantomData;
use std::num::{IntErrorKind, ParseIntError};
use std::str::FromStr;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Arg, Command};

/// The unit a duration setting is written in: its variable's suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// `_MS`: milliseconds.
    Millis,
    /// `_SECS`: seconds.
    Secs,
}

impl Unit {
    fn duration(self, n: u64) -> Duration {
        match self {
            Unit::Millis => Duration::from_millis(n),
            Unit::Secs => Duration::from_secs(n),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Millis => "milliseconds",
            Unit::Secs => "seconds",
        }
    }
}

/// Parses a whole number of [`Unit`]s into a [`Duration`], so a time
/// setting is a `Duration` everywhere it is used and its unit is written
/// once, next to its variable.
#[derive(Clone, Copy, Debug)]
pub struct DurationIn {
    unit: Unit,
    allow_zero: bool,
}

impl DurationIn {
    /// Milliseconds; 0 is accepted.
    pub const fn millis() -> DurationIn {
        DurationIn {
            unit: Unit::Millis,
            allow_zero: true,
        }
    }

    /// Seconds; 0 is accepted.
    pub const fn secs() -> DurationIn {
        DurationIn {
            unit: Unit::Secs,
            allow_zero: true,
        }
    }

    /// The same, refusing 0: for times where nothing would work with it
    /// (a timeout, a retention).
    pub const fn nonzero(self) -> DurationIn {
        DurationIn {
            allow_zero: false,
            ..self
        }
    }

    /// The duration `text` means, or why it is refused (without the
    /// setting's name).
    fn read(self, text: &str) -> Result<Duration, String> {
        let n: u64 = text
            .parse()
            .map_err(|_| format!("must be a whole number of {}", self.unit.name()))?;
        if n == 0 && !self.allow_zero {
            return Err(ZERO.to_owned());
        }
        Ok(self.unit.duration(n))
    }
}

impl TypedValueParser for DurationIn {
    type Value = Duration;

    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<Duration, clap::Error> {
        let text = value
            .to_str()
            .ok_or_else(|| refused(cmd, arg, value, NOT_TEXT))?;
        self.read(text)
            .map_err(|why| refused(cmd, arg, value, &why))
    }
}

/// Parses a long, non-zero duration whose variable names no unit
/// (`RTS_AUDIT_RETENTION`): a whole number with its unit, `30d`, `12h`,
/// `90m` or `3600s`; a bare number is seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Span;

impl Span {
    /// The duration `text` means, or why it is refused.
    fn read(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let (digits, secs_per_unit) = match text.char_indices().last() {
            Some((i, 'd')) => (&text[..i], 86_400),
            Some((i, 'h')) => (&text[..i], 3_600),
            Some((i, 'm')) => (&text[..i], 60),
            Some((i, 's')) => (&text[..i], 1),
            _ => (text, 1),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| "must be a whole number with a unit: 30d, 12h, 90m or 3600s".to_owned())?;
        if n == 0 {
            return Err(ZERO.to_owned());
        }
        n.checked_mul(secs_per_unit)
            .map(Duration::from_secs)
            .ok_or_else(|| "is too large".to_owned())
    }
}

impl TypedValueParser for Span {
    type Value = Duration;

    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<Duration, clap::Error> {
        let text = value
            .to_str()
            .ok_or_else(|| refused(cmd, arg, value, NOT_TEXT))?;
        Self::read(text).map_err(|why| refused(cmd, arg, value, &why))
    }
}

/// Parses a count that must not be 0 into its `NonZero*` type (`T`), so
/// the type itself says the count is at least 1.
#[derive(Clone, Copy, Debug)]
pub struct Positive<T>(PhantomData<fn() -> T>);

impl<T> Positive<T> {
    /// The parser for `T` (`NonZeroUsize`, `NonZeroU32`, ...).
    pub const fn new() -> Positive<T> {
        Positive(PhantomData)
    }
}

impl<T> Default for Positive<T> {
    fn default() -> Positive<T> {
        Positive::new()
    }
}

impl<T> Positive<T>
where
    T: FromStr<Err = ParseIntError>,
{
    /// The count `text` means, or why it is refused (without the
    /// setting's name).
    fn read(text: &str) -> Result<T, String> {
        text.parse().map_err(|e: ParseIntError| match e.kind() {
            IntErrorKind::Zero => ZERO.to_owned(),
            IntErrorKind::PosOverflow => "is too large".to_owned(),
            _ => "must be a whole number greater than zero".to_owned(),
        })
    }
}

impl<T> TypedValueParser for Positive<T>
where
    T: FromStr<Err = ParseIntError> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(&self, cmd: &Command, arg: Option<&Arg>, value: &OsStr) -> Result<T, clap::Error> {
        let text = value
            .to_str()
            .ok_or_else(|| refused(cmd, arg, value, NOT_TEXT))?;
        Self::read(text).map_err(|why| refused(cmd, arg, value, &why))
    }
}

/// The refusal of a zero where zero cannot work (the text the old
/// hand-kept check gave).
const ZERO: &str = "must be greater than zero";
const NOT_TEXT: &str = "must be UTF-8 text";

/// Clap's error for a refused value: `<VARIABLE> <why> (got '<value>')`,
/// named by the environment variable (the documented way to set it),
/// else by the flag.
fn refused(cmd: &Command, arg: Option<&Arg>, value: &OsStr, why: &str) -> clap::Error {
    let name = match (arg.and_then(Arg::get_env), arg.and_then(Arg::get_long)) {
        (Some(env), _) => env.to_string_lossy().into_owned(),
        (None, Some(long)) => format!("--{long}"),
        (None, None) => "a setting".to_owned(),
    };
    let message = format!("{name} {why} (got '{}')\n", value.to_string_lossy());
    clap::Error::raw(ErrorKind::ValueValidation, message).with_cmd(cmd)
}

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU32, NonZeroUsize};

    use super::*;

    #[test]
    fn a_span_reads_its_unit_and_a_bare_number_as_seconds() {
        assert_eq!(Span::read("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(Span::read("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert_eq!(Span::read("90m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(Span::read("45"), Ok(Duration::from_secs(45)));
        assert!(Span::read("0d").is_err());
        assert!(Span::read("1w").is_err());
    }

    #[test]
    fn millis_read_the_number_as_milliseconds() {
        assert_eq!(
            DurationIn::millis().read("1500"),
            Ok(Duration::from_millis(1500))
        );
    }

    #[test]
    fn secs_read_the_number_as_seconds() {
        assert_eq!(DurationIn::secs().read("30"), Ok(Duration::from_secs(30)));
    }

    #[test]
    fn a_duration_that_may_be_zero_accepts_zero() {
        assert_eq!(DurationIn::millis().read("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn a_nonzero_duration_refuses_zero() {
        let refused = DurationIn::secs().nonzero().read("0");
        assert_eq!(refused, Err("must be greater than zero".to_owned()));
    }

    #[test]
    fn a_duration_refuses_text_that_is_not_a_whole_number_naming_its_unit() {
        for text in ["", " 5", "-1", "1.5", "10s", "ten"] {
            let refused = DurationIn::millis().read(text);
            assert_eq!(
                refused,
                Err("must be a whole number of milliseconds".to_owned()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_positive_count_reads_the_number() {
        assert_eq!(
            Positive::<NonZeroUsize>::read("64"),
            Ok(NonZeroUsize::MIN.saturating_add(63))
        );
    }

    #[test]
    fn a_positive_count_refuses_zero() {
        let refused = Positive::<NonZeroU32>::read("0");
        assert_eq!(refused, Err("must be greater than zero".to_owned()));
    }

    #[test]
    fn a_positive_count_refuses_negative_and_non_numbers() {
        for text in ["-1", "", "many", "2.5"] {
            let refused = Positive::<NonZeroUsize>::read(text);
            assert_eq!(
                refused,
                Err("must be a whole number greater than zero".to_owned()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_positive_count_refuses_a_number_its_type_cannot_hold() {
        let refused = Positive::<NonZeroU32>::read("4294967296");
        assert_eq!(refused, Err("is too large".to_owned()));
    }

    #[test]
    fn a_refusal_names_the_environment_variable_and_the_value() {
        let arg = Arg::new("x").long("send-queue").env("RTS_SEND_QUEUE");
        let text = match Positive::<NonZeroUsize>::new().parse_ref(
            &Command::new("rtsync"),
            Some(&arg),
            OsStr::new("0"),
        ) {
            Ok(n) => format!("accepted {n}"),
            Err(e) => e.to_string(),
        };
        assert!(
            text.contains("RTS_SEND_QUEUE must be greater than zero (got '0')"),
            "{text}"
        );
    }
}
