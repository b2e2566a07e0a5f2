//! The Redis Functions library `rtsync`, assembled from the files under
//! `lua/` (see `lua/rtsync.lua`). Each file is one module,
//! `define(name, deps, function(m) ... end)`, that names the modules it uses;
//! [`library`] hands [`super::Store::load_library`] the assembled text after
//! [`check_modules`] found every module's dependencies defined before it.
//!
//! Two texts are assembled at build time: [`LIBRARY`], and
//! [`LIBRARY_KEY_CHECK`], which also holds `lua/keycheck.lua` (every key a
//! call touches must be one of its KEYS; `RTS_LUA_KEY_CHECK=1`, a test
//! aid). Without the check the checking code is not in the library at all.

/// The library's files in load order, with `$check` (the key check)
/// right after `base` (`lua/rtsync.lua`) when given, so every other module
/// takes base's checking `call` and `register`. The one list of the files.
macro_rules! assemble {
    ($($check:expr)?) => {
        concat!(
            include_str!("../../lua/rtsync.lua"),
            $($check,)?
            include_str!("../../lua/steps.lua"),
            include_str!("../../lua/commit.lua"),
            include_str!("../../lua/undo.lua"),
            include_str!("../../lua/presence.lua"),
            include_str!("../../lua/streams.lua"),
            include_str!("../../lua/history.lua"),
            include_str!("../../lua/records.lua"),
            include_str!("../../lua/record_history.lua"),
            include_str!("../../lua/sink.lua"),
            include_str!("../../lua/audit.lua"),
            include_str!("../../lua/views.lua"),
        )
    };
}

/// The library the sidecars load with `FUNCTION LOAD REPLACE`.
pub const LIBRARY: &str = assemble!();

/// [`LIBRARY`] with the key check (`lua/keycheck.lua`).
pub const LIBRARY_KEY_CHECK: &str = assemble!(include_str!("../../lua/keycheck.lua"));

/// A library whose modules do not load in an order their dependencies
/// allow (`define` would refuse it at `FUNCTION LOAD`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LibraryError {
    #[error("lua module {module} needs {dep}, which is not defined before it")]
    MissingDependency { module: String, dep: String },
    #[error("lua module {0} is defined twice")]
    Duplicate(String),
    #[error("malformed define line: {0}")]
    Malformed(String),
}

/// The library to load: with the key check or without it, checked.
pub fn library(key_check: bool) -> Result<&'static str, LibraryError> {
    let text = if key_check {
        LIBRARY_KEY_CHECK
    } else {
        LIBRARY
    };
    check_modules(text)?;
    Ok(text)
}

/// The modules `source` defines, in order, each with its declared
/// dependencies: the lines `define('<name>', { '<dep>', ... }, ...`.
pub fn modules(source: &str) -> Result<Vec<(String, Vec<String>)>, LibraryError> {
    source
        .lines()
        .filter(|line| line.starts_with("define('"))
        .map(parse_define)
        .collect()
}

fn parse_define(line: &str) -> Result<(String, Vec<String>), LibraryError> {
    let malformed = || LibraryError::Malformed(line.to_owned());
    let rest = line.strip_prefix("define('").ok_or_else(malformed)?;
    let (name, rest) = rest.split_once('\'').ok_or_else(malformed)?;
    let open = rest.find('{').ok_or_else(malformed)?;
    let close = rest.find('}').ok_or_else(malformed)?;
    let deps = rest
        .get(open + 1..close)
        .ok_or_else(malformed)?
        .split(',')
        .map(|d| d.trim().trim_matches('\''))
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .collect();
    Ok((name.to_owned(), deps))
}

/// Every module's dependencies are defined before it, and no module twice.
pub fn check_modules(source: &str) -> Result<(), LibraryError> {
    let mut seen: Vec<String> = Vec::new();
    for (module, deps) in modules(source)? {
        if let Some(dep) = deps.iter().find(|d| !seen.contains(d)) {
            return Err(LibraryError::MissingDependency {
                module,
                dep: dep.clone(),
            });
        }
        if seen.contains(&module) {
            return Err(LibraryError::Duplicate(module));
        }
        seen.push(module);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text of each module of `source`, from its `define` line to the
    /// next one (the header before the first goes with the first).
    fn module_texts(source: &str) -> Vec<&str> {
        let mut starts: Vec<usize> = source.match_indices("\ndefine('").map(|(i, _)| i).collect();
        if let Some(first) = starts.first_mut() {
            *first = 0;
        }
        starts.push(source.len());
        starts.windows(2).map(|w| &source[w[0]..w[1]]).collect()
    }

    #[test]
    fn every_module_depends_only_on_modules_defined_before_it() {
        assert_eq!(check_modules(LIBRARY), Ok(()));
        assert_eq!(check_modules(LIBRARY_KEY_CHECK), Ok(()));
    }

    #[test]
    fn the_library_defines_each_file_as_one_module_in_load_order() {
        let names: Vec<String> = modules(LIBRARY_KEY_CHECK)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(
            names,
            [
                "base",
                "keycheck",
                "steps",
                "commit",
                "undo",
                "presence",
                "streams",
                "history",
                "records",
                "record_history",
                "sink",
                "audit",
                "views"
            ]
        );
    }

    #[test]
    fn a_module_loaded_before_its_dependency_is_refused() {
        let source = "define('records', { 'base', 'commit' }, function(m)\nend)\n\
                      define('base', {}, function()\nend)\n";
        assert_eq!(
            check_modules(source),
            Err(LibraryError::MissingDependency {
                module: "records".into(),
                dep: "base".into()
            })
        );
    }

    #[test]
    fn the_key_check_is_assembled_in_only_when_asked_for() {
        assert!(!LIBRARY.contains("RTSYNC_KEYCHECK"));
        assert!(LIBRARY_KEY_CHECK.contains("RTSYNC_KEYCHECK"));
        assert_eq!(library(false), Ok(LIBRARY));
        assert_eq!(library(true), Ok(LIBRARY_KEY_CHECK));
    }

    #[test]
    fn only_base_and_keycheck_reach_redis_directly() {
        let texts = module_texts(LIBRARY);
        assert_eq!(texts.len(), 12);
        for module in &texts[1..] {
            for direct in ["redis.call", "redis.pcall", "redis.register_function"] {
                assert!(
                    !module.contains(direct),
                    "{direct} outside base: use base's call and register, which the key check wraps"
                );
            }
        }
    }

    #[test]
    fn the_library_is_one_named_library() {
        assert!(LIBRARY.starts_with("#!lua name=rtsync\n"));
        assert_eq!(LIBRARY.matches("#!lua").count(), 1);
    }
}
