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

/// Milliseconds: the longest timer a key may set (an hour).
pub const HOUR_MS: u64 = 3_600_000;

/// What a key's value must satisfy on its own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
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
    /// A participant id: 1-64 of `[A-Za-z0-9_.-]`.
    Id,
}

impl Rule {
    /// The key's own check of `value`, found by the key's path. The value is
    /// seen as YAML sees it (an unset optional value passes every check).
    pub fn check(self, key: &str, value: &impl serde::Serialize) -> Result<(), ConfigError> {
        if self == Rule::Any {
            return Ok(());
        }
        // Checked keys are numbers and strings, which always serialise.
        let value = serde_yaml_ng::to_value(value).unwrap_or_default();
        match (self, value.as_u64(), value.as_f64(), value.as_str()) {
            (Rule::Range(lo, hi), Some(v), _, _) => range(key, v, lo, hi),
            (Rule::Seconds, _, Some(v), _) if !(v.is_finite() && v > 0.0 && v <= 86_400.0) => {
                Err(invalid(
                    key,
                    v,
                    "a number of seconds greater than 0 and at most 86400",
                ))
            }
            (Rule::Probability, _, Some(v), _) if !(0.0..=1.0).contains(&v) => {
                Err(invalid(key, v, "a number between 0.0 and 1.0"))
            }
            (Rule::Host, _, _, Some(v)) if v.trim().is_empty() => {
                Err(invalid(key, "\"\"", "a non-empty host name or address"))
            }
            (Rule::Id, _, _, Some(v)) if !crate::protocol::coordinator::valid_participant_id(v) => {
                Err(invalid(key, v, "1-64 characters from A-Z a-z 0-9 _ . -"))
            }
            _ => Ok(()),
        }
    }
}

/// `--<flag>` of `key` in `section` ("" at the top of a role): `flag` when
/// the table names one, else `<section>-<key>`.
pub fn flag_name(flag: &[&str], section: &str, key: &str) -> String {
    match (flag.first(), section) {
        (Some(f), _) => f.to_string(),
        (None, "") => key.replace('_', "-"),
        (None, s) => format!("{s}-{}", key.replace('_', "-")),
    }
}

/// One declared key: what its flag, its help and the tests against
/// `config.yaml` are made from.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    pub name: &'static str,
    pub doc: &'static str,
    pub rule: Rule,
    /// The flag's name when it is not `<section>-<key>` (`#[flag = ".."]`).
    pub flag: &'static [&'static str],
    /// The value may hold a password: `--help` does not show the
    /// variable's value (`#[hide_env = true]`).
    pub hide_env: bool,
    /// Gives the flag the parser of the key's type.
    pub parser: fn(Arg, &str) -> Arg,
}

impl Key {
    /// The flag of this key in `section`, with its variable `TWOPC_<FLAG>`
    /// and help.
    pub fn arg(&self, section: &str) -> Arg {
        let flag = flag_name(self.flag, section, self.name);
        let env = format!("TWOPC_{}", flag.to_uppercase().replace('-', "_"));
        let help: Vec<&str> = self.doc.lines().map(str::trim).collect();
        let arg = Arg::new(flag.clone())
            .long(flag)
            .value_name(env["TWOPC_".len()..].to_string())
            .env(env)
            .hide_env_values(self.hide_env)
            .help(help.join(" "));
        (self.parser)(arg, &path(section, self.name))
    }
}

/// A struct of keys declared by `settings!`.
pub trait Table: Default {
    /// The role's section of the YAML file; "" for a nested section.
    const SECTION: &'static str = "";
    /// The keys of this struct, in declaration order.
    const KEYS: &'static [Key];
    /// The keys of this struct (section "") and of its nested sections.
    fn sections() -> Vec<(&'static str, &'static [Key])>;
    /// The values of the flags in `m` over those of `self`.
    fn overlay(&mut self, m: &ArgMatches, section: &str);
    /// Every key's own rule, nested sections included.
    fn check_keys(&self, section: &str) -> Result<(), ConfigError>;
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

/// A value a flag or variable can give a key.
pub trait FlagValue: Sized {
    /// `arg` with this type's parser; `key` names the key in errors.
    fn arg(arg: Arg, key: &str) -> Arg;
    /// The value given, if any.
    fn get(m: &ArgMatches, id: &str) -> Option<Self>
    where
        Self: Clone + Send + Sync + 'static,
    {
        m.try_get_one::<Self>(id).ok().flatten().cloned()
    }
}

macro_rules! parsed {
    ($($t:ty),*) => {$(
        impl FlagValue for $t {
            fn arg(arg: Arg, _key: &str) -> Arg {
                arg.value_parser(clap::value_parser!($t))
            }
        }
    )*};
}
parsed!(u16, u32, u64, usize, f64);
parsed!(String, PathBuf, crate::protocol::ParticipantId);

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
        let values = m.try_get_many::<String>(id).ok().flatten()?;
        Some(values.cloned().collect())
    }
}

/// The flag of an optional key gives the value itself.
impl<T: FlagValue + Clone + Send + Sync + 'static> FlagValue for Option<T> {
    fn arg(arg: Arg, key: &str) -> Arg {
        T::arg(arg, key)
    }
    fn get(m: &ArgMatches, id: &str) -> Option<Self> {
        T::get(m, id).map(Some)
    }
}

/// Flags of typed enums: the possible values show in `--help`, and a wrong
/// value is refused naming the key (the `String`), as the file and the
/// checks do.
#[derive(Clone)]
pub struct EnumParser<E>(pub String, pub std::marker::PhantomData<E>);

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
            let e = invalid(&self.0, &text, one_of::<E>());
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

/// Declare a struct of configuration keys once: the struct (a YAML section
/// with its `Default`) and its [`Table`]. `in "<role>"` names the role's
/// section of the file; a key's `#[flag = "name"]` names its flag when
/// `--<section>-<key>` will not do, and `#[hide_env = true]` keeps the
/// variable's value out of `--help`; `sections` are nested `settings!` structs, each
/// key's flag prefixed with the section's name; `extra` fields are not keys
/// of this table (loaded or checked elsewhere).
macro_rules! settings {
    (
        $(#[$smeta:meta])*
        pub struct $Config:ident $(in $section:literal)? {
            $(
                $(#[doc = $doc:literal])*
                $(#[flag = $flag:literal])?
                $(#[hide_env = $hide:literal])?
                $field:ident : $ty:ty = $default:expr, $rule:expr;
            )*
        }
        $( sections { $( $sec:ident : $Sec:ident ),* $(,)? } )?
        $( extra { $( $(#[$xmeta:meta])* $x:ident : $X:ty = $xdefault:expr ),* $(,)? } )?
    ) => {
        $(#[$smeta])*
        #[derive(serde::Deserialize, serde::Serialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $Config {
            $( $(#[doc = $doc])* pub $field: $ty, )*
            $($( pub $sec: $Sec, )*)?
            $($( $(#[$xmeta])* pub $x: $X, )*)?
        }

        impl Default for $Config {
            fn default() -> Self {
                $Config {
                    $( $field: $default, )*
                    $($( $sec: $Sec::default(), )*)?
                    $($( $x: $xdefault, )*)?
                }
            }
        }

        impl $crate::config::keys::Table for $Config {
            $( const SECTION: &'static str = $section; )?

            const KEYS: &'static [$crate::config::keys::Key] = &[
                $( $crate::config::keys::Key {
                    name: stringify!($field),
                    doc: concat!($($doc, "\n",)* ""),
                    rule: $rule,
                    flag: &[$($flag)?],
                    hide_env: false $(|| $hide)?,
                    parser: <$ty as $crate::config::keys::FlagValue>::arg,
                }, )*
            ];

            fn sections() -> Vec<(&'static str, &'static [$crate::config::keys::Key])> {
                vec![("", Self::KEYS) $($(, (stringify!($sec), $Sec::KEYS))*)?]
            }

            fn overlay(&mut self, m: &clap::ArgMatches, section: &str) {
                use $crate::config::keys::FlagValue;
                $( {
                    let flag = $crate::config::keys::flag_name(&[$($flag)?], section, stringify!($field));
                    if let Some(v) = <$ty>::get(m, &flag) {
                        self.$field = v;
                    }
                } )*
                $($( self.$sec.overlay(m, stringify!($sec)); )*)?
            }

            fn check_keys(&self, section: &str) -> Result<(), $crate::config::ConfigError> {
                $( $rule.check(
                    &$crate::config::keys::path(section, stringify!($field)),
                    &self.$field,
                )?; )*
                $($( self.$sec.check_keys(stringify!($sec))?; )*)?
                Ok(())
            }
        }
    };
}

/// Declare a typed enum of configuration values: serialised in snake_case,
/// read from YAML, flags and variables ignoring case (as the first string
/// settings were), a wrong value refused with the values allowed.
macro_rules! config_enum {
    ($($E:ty),*) => {$(
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

        impl $crate::config::keys::FlagValue for $E {
            fn arg(arg: clap::Arg, key: &str) -> clap::Arg {
                let parser = $crate::config::keys::EnumParser::<$E>(key.to_string(), Default::default());
                arg.value_parser(parser)
            }
        }
    )*};
}

pub(crate) use {config_enum, settings};
