/// The level of a `log` line, as the `log` import's first argument carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

impl Level {
    /// Any `i32`: below 0 is trace, above 4 is error.
    pub fn from_raw(raw: i32) -> Level {
        match raw {
            i32::MIN..=0 => Level::Trace,
            1 => Level::Debug,
            2 => Level::Info,
            3 => Level::Warn,
            _ => Level::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Level;

    #[test]
    fn every_raw_level_has_a_meaning() {
        assert_eq!(Level::from_raw(i32::MIN), Level::Trace);
        assert_eq!(Level::from_raw(2), Level::Info);
        assert_eq!(Level::from_raw(i32::MAX), Level::Error);
        for level in [
            Level::Trace,
            Level::Debug,
            Level::Info,
            Level::Warn,
            Level::Error,
        ] {
            assert_eq!(Level::from_raw(level as i32), level);
        }
    }
}
