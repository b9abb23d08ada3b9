//! The one name validator (`names::validate`), numbering (`names::numbered`)
//! and escaping (`names::escape`). A name that passes has no empty, `.` or
//! `..` component, is relative, carries no NUL or control character and
//! keeps to 255 bytes per component and 4096 in all; a numbered component
//! stays within 255 bytes and is itself a valid name; escaped text has no
//! control characters left.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sft::names::{self, MAX_COMPONENT, MAX_PATH};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let esc = names::escape(s);
    assert!(
        !esc.chars().any(|c| c.is_control()),
        "escape left a control character"
    );
    if names::validate(s).is_ok() {
        assert!(!s.is_empty() && s.len() <= MAX_PATH);
        assert!(!s.starts_with('/') && !s.contains('\\') && !s.contains('\0'));
        for c in s.split('/') {
            assert!(!c.is_empty() && c != "." && c != "..");
            assert!(c.len() <= MAX_COMPONENT);
        }
        let (parent, last) = names::split_parent(s);
        assert!(!last.is_empty());
        if !parent.is_empty() {
            assert!(names::validate(parent).is_ok());
        }
        let n = (data.len() as u32).wrapping_mul(2654435761) % 100_000 + 1;
        let renamed = names::numbered(last, n);
        assert!(
            renamed.len() <= MAX_COMPONENT,
            "numbered name over 255 bytes"
        );
        assert_ne!(renamed, last);
        assert!(
            names::validate(&renamed).is_ok(),
            "numbered name is not valid"
        );
    }
});
