//! The configuration loader on arbitrary file text and environment: any input is a
//! configuration or a `ConfigError`, never a panic, and both format (`Display`, `Debug`)
//! without one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessiond_server::{Config, Overrides};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The input's first line, if it names an environment variable (`SESSIOND_…=value`), is one
    // environment entry (the layer that splits keys on `__`); the rest is the file.
    let (env, file) = match text.split_once('\n') {
        Some((line, rest)) if line.starts_with("SESSIOND_") => match line.split_once('=') {
            Some((k, v)) => (vec![(k.to_owned(), v.to_owned())], rest),
            None => (Vec::new(), text),
        },
        _ => (Vec::new(), text),
    };
    match Config::load_str(file, env.into_iter(), &Overrides::default()) {
        Ok(config) => drop(format!("{config:?}")),
        Err(e) => drop(format!("{e} {e:?}")),
    }
});
