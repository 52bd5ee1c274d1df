//! The end-of-run report: per test, hits, misses and recordings never used.

use ouli_core::engine::TestUsage;
use std::fmt;

/// How many never-used interactions the report lists per test.
pub const UNUSED_LISTED: usize = 10;

/// Writes one block per test:
///
/// ```text
///   test "login": 3 hits, 1 miss, 1 of 4 recorded interactions never used
///     never used: #3 GET /v1/session
/// ```
pub fn write_usage(f: &mut impl fmt::Write, usage: &[TestUsage]) -> fmt::Result {
    for u in usage {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        write!(
            f,
            "\n  test {:?}: {}, {}, {} of {} recorded interactions never used",
            u.test_name,
            plural(u.hits, "hit", "hits"),
            plural(u.misses, "miss", "misses"),
            u.unused.len(),
            u.recorded
        )?;
        for unused in u.unused.iter().take(UNUSED_LISTED) {
            write!(
                f,
                "\n    never used: #{} {}",
                unused.index, unused.request_line
            )?;
        }
        if u.unused.len() > UNUSED_LISTED {
            write!(f, "\n    ... and {} more", u.unused.len() - UNUSED_LISTED)?;
        }
    }
    Ok(())
}

/// Whether a run is clean for `--strict`: no test missed and every recorded
/// interaction was used.
pub fn is_clean(usage: &[TestUsage]) -> bool {
    usage.iter().all(TestUsage::is_clean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ouli_core::engine::UnusedInteraction;

    #[test]
    fn report_lists_hits_misses_and_unused() {
        let usage = vec![
            TestUsage {
                test_name: "a".into(),
                recorded: 2,
                used: 1,
                hits: 1,
                misses: 2,
                unused: vec![UnusedInteraction {
                    index: 1,
                    request_line: "GET /b".into(),
                }],
            },
            TestUsage {
                test_name: "b".into(),
                recorded: 1,
                used: 1,
                hits: 1,
                misses: 0,
                unused: vec![],
            },
        ];
        let mut s = String::new();
        write_usage(&mut s, &usage).unwrap();
        assert_eq!(
            s,
            "\n  test \"a\": 1 hit, 2 misses, 1 of 2 recorded interactions never used\
             \n    never used: #1 GET /b\
             \n  test \"b\": 1 hit, 0 misses, 0 of 1 recorded interactions never used"
        );
        assert!(!is_clean(&usage));
        assert!(is_clean(&usage[1..]));
    }
}
