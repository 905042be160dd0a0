//! The one declaration of a configuration key. A `settings!` table names
//! each key once, with its type, default, doc text and rule; from it come the
//! YAML field, the `Default`, the flag `--<section>-<key>` with its
//! `TWOPC_<SECTION>_<KEY>` variable and help, the overlay of flags over the
//! file, and the key's own range check. Checks that relate two keys stay by
//! hand in each role's `validate`.
//!
//! This module knows nothing of any particular key.

use super::ConfigError;
use clap::{Arg, ArgAction, ArgMatches};
use std::path::PathBuf;

/// What a key's value must satisfy on its own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Check {
    /// Any value of the type.
    Any,
    /// An integer in `lo..=hi`.
    Range(u64, u64),
    /// Seconds, fractions allowed: greater than 0, at most a day.
    Seconds,
    /// A probability in `0.0..=1.0`.
    Probability,
    /// A host name or address: not empty.
    Host,
}

/// A key's rule: its check, and how its flag departs from the usual.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub check: Check,
    /// The flag's name when it is not `<section>-<key>`.
    pub flag: Option<&'static str>,
    /// The value may hold a password: `--help` does not show the variable's value.
    pub hide_env: bool,
}

impl Rule {
    pub const ANY: Rule = Rule::new(Check::Any);
    pub const SECONDS: Rule = Rule::new(Check::Seconds);
    pub const PROBABILITY: Rule = Rule::new(Check::Probability);
    pub const HOST: Rule = Rule::new(Check::Host);

    const fn new(check: Check) -> Rule {
        Rule {
            check,
            flag: None,
            hide_env: false,
        }
    }

    pub const fn range(lo: u64, hi: u64) -> Rule {
        Rule::new(Check::Range(lo, hi))
    }

    pub const fn flag(self, flag: &'static str) -> Rule {
        Rule {
            flag: Some(flag),
            ..self
        }
    }

    pub const fn hide_env(self) -> Rule {
        Rule {
            hide_env: true,
            ..self
        }
    }

    /// `--<flag>` of `key` in `section` ("" at the top of a role).
    pub fn flag_name(&self, section: &str, key: &str) -> String {
        match (self.flag, section) {
            (Some(f), _) => f.to_string(),
            (None, "") => key.replace('_', "-"),
            (None, s) => format!("{s}-{}", key.replace('_', "-")),
        }
    }

    /// The range as `config.yaml` writes it, for ranged keys: `1..10000`,
    /// or with binary units for keys in bytes (`4 KiB..1 GiB`).
    pub fn range_text(&self, key: &str) -> Option<String> {
        let Check::Range(lo, hi) = self.check else {
            return None;
        };
        let show = |n: u64| match key.ends_with("_bytes") {
            true => bytes_text(n),
            false => n.to_string(),
        };
        Some(format!("{}..{}", show(lo), show(hi)))
    }

    /// The key's own check of `value`, found by the key's path.
    pub fn check(&self, key: &str, value: &dyn Checked) -> Result<(), ConfigError> {
        match self.check {
            Check::Any => Ok(()),
            Check::Range(lo, hi) => match value.integer() {
                Some(v) => range(key, v, lo, hi),
                None => Ok(()),
            },
            Check::Seconds => match value.number() {
                Some(v) if !(v.is_finite() && v > 0.0 && v <= 86_400.0) => Err(invalid(
                    key,
                    v,
                    "a number of seconds greater than 0 and at most 86400",
                )),
                _ => Ok(()),
            },
            Check::Probability => match value.number() {
                Some(v) if !(0.0..=1.0).contains(&v) => {
                    Err(invalid(key, v, "a number between 0.0 and 1.0"))
                }
                _ => Ok(()),
            },
            Check::Host => match value.text() {
                Some(v) if v.trim().is_empty() => {
                    Err(invalid(key, "\"\"", "a non-empty host name or address"))
                }
                _ => Ok(()),
            },
        }
    }
}

fn bytes_text(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (size, unit) in UNITS {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {unit}", n / size);
        }
    }
    n.to_string()
}

/// One declared key, for help and for the tests against `config.yaml`.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    pub name: &'static str,
    pub doc: &'static str,
    pub rule: Rule,
}

/// A configuration error naming `key`, the `value` and what is allowed.
pub fn invalid(
    key: impl Into<String>,
    value: impl std::fmt::Display,
    allowed: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.to_string(),
        allowed: allowed.into(),
    }
}

/// `v` must lie in `lo..=hi`.
pub fn range(key: &str, v: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
    if v < lo || v > hi {
        return Err(invalid(key, v, format!("an integer between {lo} and {hi}")));
    }
    Ok(())
}

/// The path of `key` in `section`, as errors name it (`wal.segment_max_bytes`).
pub fn path(section: &str, key: &str) -> String {
    match section {
        "" => key.to_string(),
        s => format!("{s}.{key}"),
    }
}

/// What a check can see of a value.
pub trait Checked {
    fn integer(&self) -> Option<u64> {
        None
    }
    fn number(&self) -> Option<f64> {
        None
    }
    fn text(&self) -> Option<&str> {
        None
    }
}

macro_rules! integers {
    ($($t:ty),*) => {$(
        impl Checked for $t {
            fn integer(&self) -> Option<u64> {
                Some(*self as u64)
            }
        }
        impl FlagValue for $t {
            fn arg(arg: Arg, _key: &str) -> Arg {
                arg.value_parser(clap::value_parser!($t))
            }
        }
        impl Setting for $t {
            type Flag = $t;
            fn set(&mut self, v: $t) {
                *self = v;
            }
        }
    )*};
}
integers!(u16, u32, u64, usize);

impl Checked for f64 {
    fn number(&self) -> Option<f64> {
        Some(*self)
    }
}
impl Checked for String {
    fn text(&self) -> Option<&str> {
        Some(self)
    }
}
impl Checked for bool {}
impl Checked for PathBuf {}
impl Checked for Vec<String> {}
impl<T: Checked> Checked for Option<T> {
    fn integer(&self) -> Option<u64> {
        self.as_ref().and_then(Checked::integer)
    }
    fn number(&self) -> Option<f64> {
        self.as_ref().and_then(Checked::number)
    }
    fn text(&self) -> Option<&str> {
        self.as_ref().and_then(Checked::text)
    }
}

/// A value a flag or variable can give.
pub trait FlagValue: Clone + Send + Sync + 'static {
    /// `arg` with this type's parser; `key` names the key in errors.
    fn arg(arg: Arg, key: &str) -> Arg;
    /// The value given, if any.
    fn get(m: &ArgMatches, id: &str) -> Option<Self> {
        m.get_one::<Self>(id).cloned()
    }
}

/// A field a flag can set: the flag of an optional field gives the inner value.
pub trait Setting {
    type Flag: FlagValue;
    fn set(&mut self, v: Self::Flag);
}

impl<T: FlagValue> Setting for Option<T> {
    type Flag = T;
    fn set(&mut self, v: T) {
        *self = Some(v);
    }
}

macro_rules! plain {
    ($($t:ty),*) => {$(
        impl Setting for $t {
            type Flag = $t;
            fn set(&mut self, v: $t) {
                *self = v;
            }
        }
    )*};
}
plain!(f64, bool, String, PathBuf, Vec<String>);

impl FlagValue for f64 {
    fn arg(arg: Arg, _key: &str) -> Arg {
        arg.value_parser(clap::value_parser!(f64))
    }
}
impl FlagValue for String {
    fn arg(arg: Arg, _key: &str) -> Arg {
        arg.value_parser(clap::value_parser!(String))
    }
}
impl FlagValue for PathBuf {
    fn arg(arg: Arg, _key: &str) -> Arg {
        arg.value_parser(clap::value_parser!(PathBuf))
    }
}
/// `--flag` alone means true; the variable also takes 1/0, yes/no, on/off.
impl FlagValue for bool {
    fn arg(arg: Arg, _key: &str) -> Arg {
        arg.value_parser(clap::builder::BoolishValueParser::new())
            .num_args(0..=1)
            .default_missing_value("true")
    }
}
/// Comma-separated.
impl FlagValue for Vec<String> {
    fn arg(arg: Arg, _key: &str) -> Arg {
        arg.value_parser(clap::value_parser!(String))
            .action(ArgAction::Append)
            .value_delimiter(',')
    }
    fn get(m: &ArgMatches, id: &str) -> Option<Self> {
        m.get_many::<String>(id).map(|v| v.cloned().collect())
    }
}

/// Flags of typed enums: the possible values show in `--help`, and a wrong
/// value is refused naming the key, as the file and the checks do.
#[derive(Clone)]
pub struct EnumParser<E> {
    key: String,
    _e: std::marker::PhantomData<E>,
}

impl<E: clap::ValueEnum + Clone + Send + Sync + 'static> EnumParser<E> {
    pub fn new(key: &str) -> Self {
        EnumParser {
            key: key.to_string(),
            _e: std::marker::PhantomData,
        }
    }
}

/// `one of a, b, c`, the values a typed enum accepts.
pub fn one_of<E: clap::ValueEnum>() -> String {
    let names: Vec<String> = E::value_variants()
        .iter()
        .filter_map(|v| v.to_possible_value())
        .map(|p| p.get_name().to_string())
        .collect();
    format!("one of {}", names.join(", "))
}

impl<E: clap::ValueEnum + Clone + Send + Sync + 'static> clap::builder::TypedValueParser
    for EnumParser<E>
{
    type Value = E;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<E, clap::Error> {
        let text = value.to_string_lossy();
        E::from_str(&text, true).map_err(|_| {
            let e = invalid(&*self.key, &text, one_of::<E>());
            clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{e}\n"))
        })
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            E::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value()),
        ))
    }
}

/// The flag of a key, with its variable `TWOPC_<FLAG>` and help.
pub fn flag_arg<T: FlagValue>(section: &str, key: &str, doc: &str, rule: &Rule) -> Arg {
    let flag = rule.flag_name(section, key);
    let env = format!("TWOPC_{}", flag.to_uppercase().replace('-', "_"));
    let help: Vec<&str> = doc.lines().map(str::trim).collect();
    let arg = Arg::new(flag.clone())
        .long(flag)
        .value_name(env["TWOPC_".len()..].to_string())
        .env(env)
        .hide_env_values(rule.hide_env)
        .help(help.join(" "));
    T::arg(arg, &path(section, key))
}

/// Declare a section of configuration keys once. Generates the struct (YAML
/// section, `Default`), its flags (`$Flags`, a `clap::Args`), `KEYS`,
/// `overlay` (flags over the file) and `check_keys` (each key's rule).
/// `sections` are nested `settings!` structs; `extra` fields are not keys
/// of this table (loaded or checked elsewhere).
macro_rules! settings {
    (
        $(#[$smeta:meta])*
        pub struct $Config:ident in $section:literal, flags $Flags:ident {
            $(
                $(#[doc = $doc:literal])*
                $field:ident : $ty:ty = $default:expr, $rule:expr;
            )*
        }
        sections { $( $sec:ident : $Sec:ident / $SecFlags:ident ),* $(,)? }
        extra { $( $(#[$xmeta:meta])* $x:ident : $X:ty = $xdefault:expr ),* $(,)? }
    ) => {
        $(#[$smeta])*
        #[derive(serde::Deserialize, serde::Serialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $Config {
            $( $(#[doc = $doc])* pub $field: $ty, )*
            $( pub $sec: $Sec, )*
            $( $(#[$xmeta])* pub $x: $X, )*
        }

        impl Default for $Config {
            fn default() -> Self {
                $Config {
                    $( $field: $default, )*
                    $( $sec: $Sec::default(), )*
                    $( $x: $xdefault, )*
                }
            }
        }

        /// The flags (and their variables) of these keys, where given.
        #[derive(Clone, Debug, Default)]
        pub struct $Flags {
            $( pub $field: Option<<$ty as $crate::config::keys::Setting>::Flag>, )*
            $( pub $sec: $SecFlags, )*
        }

        impl $Config {
            /// The keys of this section, in declaration order.
            pub const KEYS: &'static [$crate::config::keys::Key] = &[
                $( $crate::config::keys::Key {
                    name: stringify!($field),
                    doc: concat!($($doc, "\n",)* ""),
                    rule: $rule,
                }, )*
            ];

            /// The values of `flags` over those of `self`.
            pub fn overlay(&mut self, flags: &$Flags) {
                $( if let Some(v) = &flags.$field {
                    $crate::config::keys::Setting::set(&mut self.$field, v.clone());
                } )*
                $( self.$sec.overlay(&flags.$sec); )*
            }

            /// Every key's own rule, nested sections included.
            pub fn check_keys(&self) -> Result<(), $crate::config::ConfigError> {
                $( {
                    let rule: $crate::config::keys::Rule = $rule;
                    rule.check(
                        &$crate::config::keys::path($section, stringify!($field)),
                        &self.$field,
                    )?;
                } )*
                $( self.$sec.check_keys()?; )*
                Ok(())
            }
        }

        impl clap::FromArgMatches for $Flags {
            fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
                Ok($Flags {
                    $( $field: {
                        let rule: $crate::config::keys::Rule = $rule;
                        <<$ty as $crate::config::keys::Setting>::Flag as $crate::config::keys::FlagValue>::get(
                            m,
                            &rule.flag_name($section, stringify!($field)),
                        )
                    }, )*
                    $( $sec: $SecFlags::from_arg_matches(m)?, )*
                })
            }
            fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
                *self = Self::from_arg_matches(m)?;
                Ok(())
            }
        }

        impl clap::Args for $Flags {
            fn augment_args(cmd: clap::Command) -> clap::Command {
                let mut cmd = cmd;
                $( cmd = cmd.arg($crate::config::keys::flag_arg::<
                    <$ty as $crate::config::keys::Setting>::Flag,
                >($section, stringify!($field), concat!($($doc, "\n",)* ""), &$rule)); )*
                $( cmd = $SecFlags::augment_args(cmd); )*
                cmd
            }
            fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
                Self::augment_args(cmd)
            }
        }
    };
}

/// Declare a typed enum of configuration values: serialised in snake_case,
/// read from YAML, flags and variables ignoring case (as the first string
/// settings were), a wrong value refused with the values allowed.
macro_rules! config_enum {
    ($E:ty) => {
        impl<'de> serde::Deserialize<'de> for $E {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                <$E as clap::ValueEnum>::from_str(&text, true).map_err(|_| {
                    serde::de::Error::custom(format!(
                        "invalid value {text:?}: {}",
                        $crate::config::keys::one_of::<$E>()
                    ))
                })
            }
        }

        impl std::fmt::Display for $E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match clap::ValueEnum::to_possible_value(self) {
                    Some(p) => f.write_str(p.get_name()),
                    None => Ok(()),
                }
            }
        }

        impl $crate::config::keys::Setting for $E {
            type Flag = $E;
            fn set(&mut self, v: $E) {
                *self = v;
            }
        }

        impl $crate::config::keys::Checked for $E {}

        impl $crate::config::keys::FlagValue for $E {
            fn arg(arg: clap::Arg, key: &str) -> clap::Arg {
                arg.value_parser($crate::config::keys::EnumParser::<$E>::new(key))
            }
        }
    };
}

pub(crate) use {config_enum, settings};
