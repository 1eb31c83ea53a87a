//! libsolv, the solver dnf uses, kept behind one safe module. All unsafe FFI
//! for libsolv lives here.

use std::cmp::Ordering;
use std::ffi::{CStr, CString, c_char, c_int};

use anyhow::{Context, Result};
use libsolv_sys::ffi;

// SAFETY: declared as in libsolv's evr.h; libsolv-sys does not bind evr.h.
unsafe extern "C" {
    fn pool_evrcmp_str(pool: *const ffi::Pool, evr1: *const c_char, evr2: *const c_char, mode: c_int) -> c_int;
}
/// evr.h: compare epoch, version and release.
const EVRCMP_COMPARE: c_int = 0;

/// The version of the libsolv arbor is linked against.
pub fn libsolv_version() -> String {
    // SAFETY: solv_version is a NUL-terminated static string in libsolv.
    unsafe { CStr::from_ptr(ffi::solv_version.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// A libsolv pool set up for RPM version rules (never Debian's, which the
/// Debian build of libsolv defaults to).
pub struct Pool {
    raw: *mut ffi::Pool,
}

impl Pool {
    /// A new, empty pool with `DISTTYPE_RPM`.
    pub fn new_rpm() -> Pool {
        // SAFETY: pool_create returns a fresh pool or aborts on OOM; setdisttype on it is valid.
        let raw = unsafe { ffi::pool_create() };
        // SAFETY: raw is the live pool just created.
        unsafe { ffi::pool_setdisttype(raw, ffi::DISTTYPE_RPM as c_int) };
        Pool { raw }
    }

    /// Compares two `[epoch:]version[-release]` strings the way rpm does.
    pub fn evrcmp(&self, a: &str, b: &str) -> Result<Ordering> {
        let ca = CString::new(a).with_context(|| format!("version {a:?} contains NUL"))?;
        let cb = CString::new(b).with_context(|| format!("version {b:?} contains NUL"))?;
        // SAFETY: self.raw is live; both strings are NUL-terminated and outlive the call.
        let r = unsafe { pool_evrcmp_str(self.raw, ca.as_ptr(), cb.as_ptr(), EVRCMP_COMPARE) };
        Ok(r.cmp(&0))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: raw came from pool_create and is freed exactly once.
        unsafe { ffi::pool_free(self.raw) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpm_version_rules_not_debian() {
        let pool = Pool::new_rpm();
        let cases = [
            ("1.0~rc1", "1.0", Ordering::Less),
            ("1.0", "1.0^post1", Ordering::Less),
            ("1.0^post1", "1.0.1", Ordering::Less),
            ("1:1.0", "2.0", Ordering::Greater),
            ("1.0-2", "1.0-10", Ordering::Less),
            ("1.0a", "1.0", Ordering::Greater),
            ("2.36-9", "2.36-9", Ordering::Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(pool.evrcmp(a, b).unwrap(), want, "{a} vs {b}");
        }
    }

    #[test]
    fn version_is_system_libsolv() {
        assert!(libsolv_version().starts_with("0.7."), "{}", libsolv_version());
    }
}
