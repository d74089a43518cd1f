//! Calendar windows (`align = "calendar"`): a `fixed_window` whose windows are the days, the
//! weeks (Monday to Sunday) or the months of an IANA time zone, as its clocks show them — so a
//! day across a DST change lasts 23 or 25 hours, and February is shorter than March.
//!
//! A window's number counts calendar periods from a fixed origin (days and weeks from
//! 1900-01-01, months from January 1900), so numbers only grow with time and each names
//! one window in every process. A window starts at the first instant of its period: local
//! midnight, or where a DST change skips midnight, the first time the day has. The zone
//! data is jiff's bundled copy of the IANA database, the same in every binding and on
//! every machine.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;

use parking_lot::Mutex;

/// Days from 1900-01-01 to 1970-01-01: a window's number counts from 1900 so that every
/// instant the engine meets has one.
const DAYS_BEFORE_EPOCH: i64 = 25_567;
/// 1900-01-01 was a Monday: weeks count from it.
const _: () = assert!(DAYS_BEFORE_EPOCH % 7 == 3);

/// The calendar period a window spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CalendarUnit {
    /// A day, from local midnight.
    Day,
    /// A week, from Monday's midnight (ISO 8601).
    Week,
    /// A month, from the first day's midnight.
    Month,
}

impl CalendarUnit {
    /// `1d`, `1w` or `1mo`, as `window` writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            CalendarUnit::Day => "1d",
            CalendarUnit::Week => "1w",
            CalendarUnit::Month => "1mo",
        }
    }

    /// The unit `window` names (`1d`, `1w`, `7d`, `1mo`), if any.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "1d" | "24h" | "day" => Some(CalendarUnit::Day),
            "1w" | "7d" | "week" => Some(CalendarUnit::Week),
            "1mo" | "month" => Some(CalendarUnit::Month),
            _ => None,
        }
    }

    /// Its usual length in µs (a month: the mean Gregorian month), for what needs one number:
    /// the `w` of `RateLimit-Policy` and the denial window of `block_after`.
    pub const fn nominal_micros(self) -> u64 {
        match self {
            CalendarUnit::Day => 86_400_000_000,
            CalendarUnit::Week => 7 * 86_400_000_000,
            // 365.2425 days / 12.
            CalendarUnit::Month => 2_629_746_000_000,
        }
    }
}

/// Windows aligned to a calendar unit in a time zone.
#[derive(Debug, Clone, Copy)]
pub struct Calendar {
    unit: CalendarUnit,
    zone: &'static Zone,
}

#[derive(Debug)]
struct Zone {
    name: Box<str>,
    tz: TimeZone,
}

impl PartialEq for Calendar {
    fn eq(&self, other: &Self) -> bool {
        self.unit == other.unit && self.zone.name == other.zone.name
    }
}

impl Eq for Calendar {}

impl Hash for Calendar {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.unit.hash(state);
        self.zone.name.hash(state);
    }
}

/// Every zone a configuration named, made once per process: a calendar is `Copy`, and a
/// process names few zones.
fn zone(name: &str) -> Result<&'static Zone, String> {
    static ZONES: OnceLock<Mutex<HashMap<Box<str>, &'static Zone>>> = OnceLock::new();
    let mut zones = ZONES.get_or_init(Default::default).lock();
    if let Some(zone) = zones.get(name) {
        return Ok(zone);
    }
    let tz = jiff::tz::db().get(name).map_err(|_| {
        format!("{name:?} is not an IANA time zone (such as \"UTC\", \"Europe/Berlin\" or \"America/New_York\")")
    })?;
    let zone: &'static Zone = Box::leak(Box::new(Zone {
        name: name.into(),
        tz,
    }));
    zones.insert(name.into(), zone);
    Ok(zone)
}

impl Calendar {
    /// Windows of `unit` in the IANA time zone `zone` (e.g. `Europe/Berlin`, `UTC`).
    pub fn new(unit: CalendarUnit, zone_name: &str) -> Result<Self, String> {
        Ok(Calendar {
            unit,
            zone: zone(zone_name)?,
        })
    }

    /// The same time zone's windows of `unit`.
    pub const fn with_unit(self, unit: CalendarUnit) -> Self {
        Calendar { unit, ..self }
    }

    /// The unit.
    pub const fn unit(&self) -> CalendarUnit {
        self.unit
    }

    /// The time zone's name.
    pub fn zone(&self) -> &str {
        &self.zone.name
    }

    /// The number of the window `now` (µs since the epoch) falls in.
    pub(crate) fn index(&self, now: u64) -> u64 {
        let at = jiff::Timestamp::from_microsecond(i64::try_from(now).unwrap_or(i64::MAX))
            .unwrap_or(jiff::Timestamp::MAX);
        let date = self.zone.tz.to_datetime(at).date();
        let days = days_from_civil(date) + DAYS_BEFORE_EPOCH;
        let index = match self.unit {
            CalendarUnit::Day => days,
            CalendarUnit::Week => days.div_euclid(7),
            CalendarUnit::Month => {
                (i64::from(date.year()) - 1900) * 12 + i64::from(date.month()) - 1
            }
        };
        u64::try_from(index).unwrap_or(0)
    }

    /// When window `index` starts, in µs since the epoch (0 before it).
    pub(crate) fn start(&self, index: u64) -> u64 {
        let index = i64::try_from(index).unwrap_or(i64::MAX / 2);
        let date = match self.unit {
            CalendarUnit::Day => civil_from_days(index - DAYS_BEFORE_EPOCH),
            CalendarUnit::Week => civil_from_days(index * 7 - DAYS_BEFORE_EPOCH),
            CalendarUnit::Month => {
                let (year, month) = (1900 + index.div_euclid(12), index.rem_euclid(12) + 1);
                i16::try_from(year)
                    .ok()
                    .and_then(|y| Date::new(y, month as i8, 1).ok())
            }
        };
        let Some(date) = date else {
            return u64::MAX / 2;
        };
        self.zone
            .tz
            .to_ambiguous_timestamp(date.to_datetime(Time::midnight()))
            .compatible()
            .map_or(0, |t| u64::try_from(t.as_microsecond()).unwrap_or(0))
    }

    /// When window `index` ends: where the next one starts.
    pub(crate) fn end(&self, index: u64) -> u64 {
        self.start(index.saturating_add(1))
    }
}

/// Days from 1970-01-01 to `date` (negative before it), by Howard Hinnant's
/// `days_from_civil`.
fn days_from_civil(date: Date) -> i64 {
    let (y, m, d) = (
        i64::from(date.year()),
        i64::from(date.month()),
        i64::from(date.day()),
    );
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01 (`civil_from_days`), if jiff can represent it.
fn civil_from_days(days: i64) -> Option<Date> {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    Date::new(i16::try_from(y).ok()?, m as i8, d as i8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(text: &str) -> u64 {
        let t: jiff::Timestamp = text.parse().unwrap();
        t.as_microsecond() as u64
    }

    #[test]
    fn days_across_dst_changes_last_23_and_25_hours() {
        let berlin = Calendar::new(CalendarUnit::Day, "Europe/Berlin").unwrap();
        // 2026-03-29: clocks go from 02:00 to 03:00.
        let spring = berlin.index(us("2026-03-29T10:00:00Z"));
        assert_eq!(berlin.start(spring), us("2026-03-28T23:00:00Z"));
        assert_eq!(berlin.end(spring), us("2026-03-29T22:00:00Z"));
        // 2026-10-25: clocks go from 03:00 back to 02:00.
        let autumn = berlin.index(us("2026-10-25T10:00:00Z"));
        assert_eq!(
            berlin.end(autumn) - berlin.start(autumn),
            25 * 3_600_000_000
        );
        assert_eq!(berlin.index(us("2026-10-25T22:59:59Z")), autumn);
        assert_eq!(berlin.index(us("2026-10-25T23:00:00Z")), autumn + 1);
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let utc = Calendar::new(CalendarUnit::Week, "UTC").unwrap();
        // 2026-12-04 is a Friday; its week began on Monday 2026-11-30.
        let week = utc.index(us("2026-12-04T12:00:00Z"));
        assert_eq!(utc.start(week), us("2026-11-30T00:00:00Z"));
        assert_eq!(utc.end(week), us("2026-12-07T00:00:00Z"));
        let ny = Calendar::new(CalendarUnit::Month, "America/New_York").unwrap();
        let feb = ny.index(us("2026-02-14T12:00:00Z"));
        assert_eq!(ny.start(feb), us("2026-02-01T05:00:00Z"));
        // March 1st is still in EST (DST starts on the 8th).
        assert_eq!(ny.end(feb), us("2026-03-01T05:00:00Z"));
        assert_eq!(ny.end(feb + 1), us("2026-04-01T04:00:00Z"));
        // The last instant of January in New York is in January, though it is February in UTC.
        assert_eq!(ny.index(us("2026-02-01T04:59:59Z")), feb - 1);
    }

    #[test]
    fn every_day_from_1970_maps_back_to_itself() {
        for days in (0..60_000).step_by(37) {
            let date = civil_from_days(days).unwrap();
            assert_eq!(days_from_civil(date), days);
        }
        let utc = Calendar::new(CalendarUnit::Day, "UTC").unwrap();
        assert_eq!(utc.start(utc.index(0)), 0);
        assert!(Calendar::new(CalendarUnit::Day, "Mars/Olympus").is_err());
    }
}
