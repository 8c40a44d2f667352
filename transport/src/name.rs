//! Segment names: what a user may type as `shm-name`, and where it lives.

use crate::error::Error;
use std::path::PathBuf;

pub const MAX_NAME_LEN: usize = 200;

/// Where segments live. `SHMFRAME_DIR` overrides it (tests of permission errors, or systems
/// that mount tmpfs elsewhere); it must be a tmpfs for shared memory to be memory.
pub fn shm_dir() -> PathBuf {
    std::env::var_os("SHMFRAME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/shm"))
}

/// Checks a segment name: 1..=200 characters from `[A-Za-z0-9._-]`, not starting with a dot.
/// Anything else is refused, so a name can never reach a path outside the shm directory.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let invalid = |why: &str| Error::InvalidName {
        name: name.to_string(),
        why: why.to_string(),
    };
    if name.is_empty() {
        return Err(invalid("it is empty; set shm-name to e.g. \"cam0\""));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(&format!(
            "it is {} bytes long, the limit is {MAX_NAME_LEN}; choose a shorter name",
            name.len()
        )));
    }
    if name.starts_with('.') {
        return Err(invalid(
            "it starts with '.'; start it with a letter, digit, '_' or '-', e.g. \"cam0\"",
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(&format!(
            "it contains {c:?}; only letters, digits, '.', '_' and '-' are allowed"
        )));
    }
    Ok(())
}

/// The path of a validated name.
pub fn segment_path(name: &str) -> Result<PathBuf, Error> {
    validate_name(name)?;
    Ok(shm_dir().join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["cam0", "a", "front-door.raw_1", &"x".repeat(MAX_NAME_LEN)] {
            validate_name(n).unwrap();
        }
        assert_eq!(segment_path("cam0").unwrap(), shm_dir().join("cam0"));
    }

    #[test]
    fn refuses_names_that_could_escape_or_confuse() {
        let too_long = "x".repeat(MAX_NAME_LEN + 1);
        for (n, fragment) in [
            ("", "empty"),
            ("a/b", "'/'"),
            ("..", "starts with '.'"),
            (".hidden", "starts with '.'"),
            ("../etc/passwd", "starts with '.'"),
            ("cam 0", "' '"),
            ("caméra", "'é'"),
            ("a\0b", "'\\0'"),
            (too_long.as_str(), "201 bytes long"),
        ] {
            let err = validate_name(n).unwrap_err().to_string();
            assert!(err.contains(fragment), "{n:?}: {err}");
            assert!(err.contains("invalid shm-name"), "{err}");
        }
    }
}
