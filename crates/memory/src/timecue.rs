//! Time-aware queries: the span of time a caller's question names ("what did I tell you
//! yesterday?", "in May", "two weeks ago"), and how a memory's date is said back to a
//! caller ("on Monday", "on 8 May 2023").
//!
//! Everything is relative to `now_ms` (Unix ms), an input: this module reads no clock.
//! Days are UTC days; the civil-date arithmetic is Howard Hinnant's `days_from_civil` /
//! `civil_from_days`, exact for the proleptic Gregorian calendar.
//!
//! Weeks start on Monday ("last week" is the Monday-to-Sunday week before this one).
//! Cues about the future ("tomorrow", "next week") name no span of memories, and "last
//! time" means the previous call, not a date: both give `None`, so the caller falls back
//! to its own handling.

use crate::DAY_MS;

const HOUR_MS: i64 = 3_600_000;

/// A half-open span of time, `start_ms <= t < end_ms` (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl TimeRange {
    pub fn contains(&self, unix_ms: i64) -> bool {
        self.start_ms <= unix_ms && unix_ms < self.end_ms
    }

    /// The whole UTC days `first_day .. end_day` (days since the epoch, half-open).
    fn days(first_day: i64, end_day: i64) -> Self {
        TimeRange {
            start_ms: day_start(first_day),
            end_ms: day_start(end_day),
        }
    }
}

const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Days since 1970-01-01 of the civil date `y-m-d` (Hinnant's `days_from_civil`).
/// `m` is 1..=12 and `d` 1..=31; out-of-range parts give a date counted past the month
/// end rather than a panic.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let m = i64::from(m);
    let d = i64::from(d);
    // The year is counted from March so that the leap day is the last day of the year.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = (m + 9) % 12; // March = 0 ... February = 11
    let doy = (153 * mp + 2) / 5 + d - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month, day)` of a day count since 1970-01-01 (Hinnant's
/// `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m as u32, d as u32)
}

/// Day of the week of a day count: 0 = Monday ... 6 = Sunday (1970-01-01 was a Thursday).
pub fn weekday(days: i64) -> u32 {
    (days + 3).rem_euclid(7) as u32
}

/// The UTC day (days since the epoch) that a Unix-ms instant falls in.
pub fn day_of(unix_ms: i64) -> i64 {
    unix_ms.div_euclid(DAY_MS)
}

pub fn is_leap_year(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(y) => 29,
        2 => 28,
        _ => 0,
    }
}

fn day_start(day: i64) -> i64 {
    day.saturating_mul(DAY_MS)
}

/// The Monday of the week that `day` is in.
fn monday_of(day: i64) -> i64 {
    day - i64::from(weekday(day))
}

/// Month `m` of year `y` moved by `delta` months, normalised to 1..=12.
fn add_months(y: i64, m: u32, delta: i64) -> (i64, u32) {
    let index = y * 12 + i64::from(m) - 1 + delta;
    (index.div_euclid(12), (index.rem_euclid(12) + 1) as u32)
}

fn month_range(y: i64, m: u32) -> TimeRange {
    let (ny, nm) = add_months(y, m, 1);
    TimeRange::days(days_from_civil(y, m, 1), days_from_civil(ny, nm, 1))
}

fn year_range(y: i64) -> TimeRange {
    TimeRange::days(days_from_civil(y, 1, 1), days_from_civil(y + 1, 1, 1))
}

/// How a memory's date is said to a caller: "today", "yesterday", "on Monday" (2 to 6
/// days ago), "on 8 May" (this year), "on 8 May 2023" (another year).
pub fn describe(unix_ms: i64, now_ms: i64) -> String {
    let day = day_of(unix_ms);
    let today = day_of(now_ms);
    match today - day {
        0 => return "today".to_string(),
        1 => return "yesterday".to_string(),
        // Within the week a weekday is unambiguous; further back it would not be.
        2..=6 => return format!("on {}", WEEKDAYS[weekday(day) as usize]),
        _ => {}
    }
    let (y, m, d) = civil_from_days(day);
    let month = MONTHS[(m as usize).saturating_sub(1) % 12];
    let (this_year, _, _) = civil_from_days(today);
    if y == this_year {
        format!("on {d} {month}")
    } else {
        format!("on {d} {month} {y}")
    }
}

/// The span of time a question names, relative to `now_ms`; `None` when it names none.
///
/// Understood: "today", "this morning/afternoon/evening", "tonight", "yesterday" (and
/// "yesterday morning" ...), "last night", "the day before yesterday", "N days / weeks /
/// months / years ago" (digits, "one".."twelve", "a", "a couple of", "a few"), "last
/// week / month / year / weekend", "this week / month / year / weekend", "the past N days"
/// / "the last two weeks" (rolling, up to now), "the past week", "(on / last) Monday" (the
/// most recent Monday before today), "in May" / "last May" / "in May 2023", "on 8 May" /
/// "May 8th", "in 2023", "recently" / "lately" (the last 14 days), "the other day"
/// (the last week). "since <cue>" runs from the cue up to now. The first cue in the
/// question wins. "N weeks ago" is the Monday-to-Sunday week containing the day N*7 days
/// ago, and "N months ago" the calendar month, so "a week ago" equals "last week".
pub fn parse(question: &str, now_ms: i64) -> Option<TimeRange> {
    let words = words(question);
    let today = day_of(now_ms);
    let mut i = 0;
    while i < words.len() {
        // "last time" / "next time" / "the last call" mean a call, not a date.
        if matches!(words[i].as_str(), "last" | "next" | "previous")
            && matches!(word(&words, i + 1), "time" | "call" | "conversation")
        {
            i += 2;
            continue;
        }
        if let Some(range) = cue_at(&words, i, today) {
            return Some(if since_before(&words, i) {
                TimeRange {
                    start_ms: range.start_ms,
                    end_ms: day_start(today + 1).max(range.end_ms),
                }
            } else {
                range
            });
        }
        i += 1;
    }
    None
}

/// Lower-case words of a question; apostrophes are dropped ("what's" -> "whats") and
/// every other non-alphanumeric character separates words.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '’'))
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

fn word(words: &[String], i: usize) -> &str {
    words.get(i).map(String::as_str).unwrap_or("")
}

/// Whether the cue at `i` is introduced by "since" ("since May", "since last week").
fn since_before(words: &[String], i: usize) -> bool {
    let prev = |k: usize| i.checked_sub(k).map(|p| word(words, p)).unwrap_or("");
    prev(1) == "since"
        || (prev(2) == "since" && matches!(prev(1), "last" | "the" | "on" | "in" | "early"))
}

fn weekday_index(w: &str) -> Option<u32> {
    WEEKDAYS
        .iter()
        .position(|d| d.eq_ignore_ascii_case(w))
        .map(|p| p as u32)
}

/// Month number of a month name ("may" -> 5; "sept" and three-letter forms other than
/// "may"/"mar"/"jun"/"jan" which are words or names are accepted too).
fn month_index(w: &str) -> Option<u32> {
    if let Some(p) = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(w)) {
        return Some(p as u32 + 1);
    }
    match w {
        "feb" => Some(2),
        "apr" => Some(4),
        "aug" => Some(8),
        "sep" | "sept" => Some(9),
        "oct" => Some(10),
        "nov" => Some(11),
        "dec" => Some(12),
        _ => None,
    }
}

/// A day of the month written "8", "8th", "1st", "22nd", "3rd".
fn day_number(w: &str) -> Option<u32> {
    let digits = w
        .strip_suffix("st")
        .or_else(|| w.strip_suffix("nd"))
        .or_else(|| w.strip_suffix("rd"))
        .or_else(|| w.strip_suffix("th"))
        .unwrap_or(w);
    if digits.is_empty() || digits.len() > 2 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n: u32 = digits.parse().ok()?;
    (1..=31).contains(&n).then_some(n)
}

fn year_number(w: &str) -> Option<i64> {
    if w.len() != 4 || !w.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let y: i64 = w.parse().ok()?;
    (1900..=2200).contains(&y).then_some(y)
}

/// A count of units: digits, "one".."twelve", "a"/"an", "couple" (of), "few", "several".
/// Returns the count and the index after it (and after a following "of").
fn count_at(words: &[String], i: usize) -> Option<(i64, usize)> {
    let w = word(words, i);
    let n = match w {
        "a" | "an" | "one" => 1,
        "two" | "couple" => 2,
        "three" | "few" | "several" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        _ if !w.is_empty() && w.len() <= 4 && w.chars().all(|c| c.is_ascii_digit()) => {
            w.parse::<i64>().ok()?
        }
        _ => return None,
    };
    // "a couple of days", "a few weeks": the article is part of the count word.
    if matches!(w, "a" | "an") && matches!(word(words, i + 1), "couple" | "few") {
        return count_at(words, i + 1);
    }
    let next = if word(words, i + 1) == "of" {
        i + 2
    } else {
        i + 1
    };
    Some((n, next))
}

#[derive(Clone, Copy, PartialEq)]
enum Unit {
    Day,
    Week,
    Month,
    Year,
}

fn unit_of(w: &str) -> Option<Unit> {
    match w {
        "day" | "days" => Some(Unit::Day),
        "week" | "weeks" => Some(Unit::Week),
        "month" | "months" => Some(Unit::Month),
        "year" | "years" => Some(Unit::Year),
        _ => None,
    }
}

/// Part of a day named after "this", "yesterday": (start hour, end hour).
fn part_of_day(w: &str) -> Option<(i64, i64)> {
    match w {
        "morning" => Some((0, 12)),
        "afternoon" => Some((12, 17)),
        "evening" => Some((17, 24)),
        "night" => Some((18, 24)),
        _ => None,
    }
}

fn hours_of_day(day: i64, from_h: i64, to_h: i64) -> TimeRange {
    TimeRange {
        start_ms: day_start(day).saturating_add(from_h * HOUR_MS),
        end_ms: day_start(day).saturating_add(to_h * HOUR_MS),
    }
}

/// The time cue starting at word `i`, if any.
fn cue_at(words: &[String], i: usize, today: i64) -> Option<TimeRange> {
    let w = word(words, i);
    let next = word(words, i + 1);
    let (this_year, this_month, _) = civil_from_days(today);
    let this_monday = monday_of(today);

    match w {
        "today" => return Some(TimeRange::days(today, today + 1)),
        "tonight" => return Some(hours_of_day(today, 17, 24)),
        "yesterday" => {
            return Some(match part_of_day(next) {
                Some((a, b)) => hours_of_day(today - 1, a, b),
                None => TimeRange::days(today - 1, today),
            })
        }
        "day" if next == "before" && word(words, i + 2) == "yesterday" => {
            return Some(TimeRange::days(today - 2, today - 1))
        }
        "recently" | "lately" | "recent" => return Some(TimeRange::days(today - 14, today + 1)),
        "other" if next == "day" && i > 0 && word(words, i - 1) == "the" => {
            return Some(TimeRange::days(today - 7, today))
        }
        "weekend" if i > 0 && word(words, i - 1) == "the" => {
            // "over the weekend": the one we are in, or else the one just gone.
            return Some(if weekday(today) >= 5 {
                TimeRange::days(this_monday + 5, this_monday + 7)
            } else {
                TimeRange::days(this_monday - 2, this_monday)
            });
        }
        "this" => {
            if let Some((a, b)) = part_of_day(next) {
                return Some(hours_of_day(today, a, b));
            }
            match next {
                "week" => return Some(TimeRange::days(this_monday, this_monday + 7)),
                "weekend" => return Some(TimeRange::days(this_monday + 5, this_monday + 7)),
                "month" => return Some(month_range(this_year, this_month)),
                "year" => return Some(year_range(this_year)),
                _ => {}
            }
        }
        "last" | "past" => {
            if w == "last" {
                match next {
                    "night" => {
                        return Some(TimeRange {
                            start_ms: hours_of_day(today - 1, 18, 24).start_ms,
                            end_ms: hours_of_day(today, 0, 6).end_ms,
                        })
                    }
                    "week" => return Some(TimeRange::days(this_monday - 7, this_monday)),
                    "weekend" => return Some(TimeRange::days(this_monday - 2, this_monday)),
                    "month" => {
                        let (y, m) = add_months(this_year, this_month, -1);
                        return Some(month_range(y, m));
                    }
                    "year" => return Some(year_range(this_year - 1)),
                    _ => {}
                }
                if let Some(m) = month_index(next) {
                    // "last May": the most recent May before this month.
                    let y = if m < this_month {
                        this_year
                    } else {
                        this_year - 1
                    };
                    return Some(month_range(y, m));
                }
            } else {
                // "the past week / month / year": rolling, up to now.
                let days = match next {
                    "week" => Some(7),
                    "month" => Some(30),
                    "year" => Some(365),
                    _ => None,
                };
                if let Some(d) = days {
                    return Some(TimeRange::days(today - d, today + 1));
                }
            }
            // "the last / past N days": rolling, up to now.
            if let Some((n, k)) = count_at(words, i + 1) {
                if let Some(unit) = unit_of(word(words, k)) {
                    let per = match unit {
                        Unit::Day => 1,
                        Unit::Week => 7,
                        Unit::Month => 30,
                        Unit::Year => 365,
                    };
                    return Some(TimeRange::days(today - n * per, today + 1));
                }
            }
        }
        _ => {}
    }

    // "N units ago".
    if let Some((n, k)) = count_at(words, i) {
        if let (Some(unit), "ago") = (unit_of(word(words, k)), word(words, k + 1)) {
            return Some(match unit {
                Unit::Day => TimeRange::days(today - n, today - n + 1),
                Unit::Week => {
                    let monday = monday_of(today - 7 * n);
                    TimeRange::days(monday, monday + 7)
                }
                Unit::Month => {
                    let (y, m) = add_months(this_year, this_month, -n);
                    month_range(y, m)
                }
                Unit::Year => year_range(this_year - n),
            });
        }
    }

    // "(on / last) Monday": the most recent such day before today; "next Monday" is not.
    if let Some(wd) = weekday_index(w) {
        if i > 0 && word(words, i - 1) == "next" {
            return None;
        }
        let back = (i64::from(weekday(today)) - i64::from(wd)).rem_euclid(7);
        let back = if back == 0 { 7 } else { back };
        return Some(TimeRange::days(today - back, today - back + 1));
    }

    if let Some(m) = month_index(w) {
        return month_cue(words, i, m, today);
    }

    // "in 2023".
    if let Some(y) = year_number(w) {
        if i > 0
            && matches!(
                word(words, i - 1),
                "in" | "during" | "of" | "since" | "back"
            )
        {
            return Some(year_range(y));
        }
    }
    None
}

/// A cue around the month name at `i`: "in May", "May 2023", "8 May", "the 8th of May",
/// "May 8th, 2023". "May" and "March" are also ordinary words, so a month is taken only
/// with a preposition before it or a number next to it (other months also alone).
fn month_cue(words: &[String], i: usize, m: u32, today: i64) -> Option<TimeRange> {
    let (this_year, this_month, _) = civil_from_days(today);
    let prev = if i > 0 { word(words, i - 1) } else { "" };
    let prev2 = if i > 1 { word(words, i - 2) } else { "" };
    let next = word(words, i + 1);

    // The day of the month: "8 May", "8th of May", "May 8".
    let (day, after) = if let Some(d) = day_number(next) {
        (Some(d), i + 2)
    } else if let Some(d) = day_number(prev) {
        (Some(d), i + 1)
    } else if prev == "of" {
        (day_number(prev2), i + 1)
    } else {
        (None, i + 1)
    };
    let year = year_number(word(words, after));

    let introduced = matches!(
        prev,
        "in" | "during" | "of" | "since" | "early" | "late" | "mid" | "back" | "this"
    );
    // "may" and "march" are also a verb each.
    let ambiguous = m == 3 || m == 5;
    if day.is_none() && year.is_none() && !introduced && ambiguous {
        return None;
    }

    match day {
        Some(d) => {
            // The most recent such date not after today, unless the year is given.
            let y = year.unwrap_or_else(|| {
                if days_from_civil(this_year, m, d) <= today {
                    this_year
                } else {
                    this_year - 1
                }
            });
            if d > days_in_month(y, m) {
                return None;
            }
            let day = days_from_civil(y, m, d);
            Some(TimeRange::days(day, day + 1))
        }
        None => {
            let y = year.unwrap_or(if m <= this_month {
                this_year
            } else {
                this_year - 1
            });
            Some(month_range(y, m))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wednesday 15 May 2024, 14:30 UTC.
    const NOW: i64 = 1_715_783_400_000;

    fn day_ms(y: i64, m: u32, d: u32) -> i64 {
        days_from_civil(y, m, d) * DAY_MS
    }

    fn days(y: i64, m: u32, d: u32, y2: i64, m2: u32, d2: u32) -> TimeRange {
        TimeRange {
            start_ms: day_ms(y, m, d),
            end_ms: day_ms(y2, m2, d2),
        }
    }

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(days_from_civil(2024, 5, 15), 19_858);
        assert_eq!(days_from_civil(2100, 3, 1), 47_541);
        assert_eq!(days_from_civil(2200, 12, 31), 84_370);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
        assert_eq!(civil_from_days(84_370), (2200, 12, 31));
        assert_eq!(NOW.div_euclid(DAY_MS), 19_858);
    }

    #[test]
    fn civil_dates_agree_with_counting_every_day_1970_to_2200() {
        // An independent walk through the calendar, one day at a time.
        let (mut y, mut m, mut d) = (1970_i64, 1_u32, 1_u32);
        let last = days_from_civil(2200, 12, 31);
        for n in 0..=last {
            assert_eq!(days_from_civil(y, m, d), n, "{y}-{m}-{d}");
            assert_eq!(civil_from_days(n), (y, m, d), "day {n}");
            d += 1;
            if d > days_in_month(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
        assert_eq!((y, m, d), (2201, 1, 1));
    }

    #[test]
    fn leap_years_follow_the_gregorian_rules() {
        assert!(is_leap_year(2000));
        assert!(is_leap_year(2024));
        assert!(!is_leap_year(2100));
        assert!(!is_leap_year(2023));
        assert_eq!(days_in_month(2100, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
    }

    #[test]
    fn weekdays_of_known_dates() {
        assert_eq!(weekday(0), 3, "1970-01-01 was a Thursday");
        assert_eq!(weekday(days_from_civil(2024, 5, 15)), 2, "Wednesday");
        assert_eq!(weekday(days_from_civil(2100, 3, 1)), 0, "Monday");
        assert_eq!(weekday(days_from_civil(1969, 12, 28)), 6, "Sunday");
        assert_eq!(day_of(-1), -1, "the instant before the epoch is in 1969");
    }

    #[test]
    fn today_yesterday_and_the_day_before() {
        assert_eq!(
            parse("What did I say today?", NOW),
            Some(days(2024, 5, 15, 2024, 5, 16))
        );
        assert_eq!(
            parse("What did we talk about yesterday?", NOW),
            Some(days(2024, 5, 14, 2024, 5, 15))
        );
        assert_eq!(
            parse("and the day before yesterday?", NOW),
            Some(days(2024, 5, 13, 2024, 5, 14))
        );
    }

    #[test]
    fn parts_of_days() {
        let morning = parse("What did I tell you this morning?", NOW).unwrap();
        assert_eq!(morning.start_ms, day_ms(2024, 5, 15));
        assert_eq!(morning.end_ms, day_ms(2024, 5, 15) + 12 * HOUR_MS);
        let night = parse("what did I say last night", NOW).unwrap();
        assert_eq!(night.start_ms, day_ms(2024, 5, 14) + 18 * HOUR_MS);
        assert_eq!(night.end_ms, day_ms(2024, 5, 15) + 6 * HOUR_MS);
        let y_evening = parse("yesterday evening", NOW).unwrap();
        assert_eq!(y_evening.start_ms, day_ms(2024, 5, 14) + 17 * HOUR_MS);
        assert_eq!(y_evening.end_ms, day_ms(2024, 5, 15));
    }

    #[test]
    fn counts_ago_in_digits_and_words() {
        assert_eq!(
            parse("3 days ago", NOW),
            Some(days(2024, 5, 12, 2024, 5, 13))
        );
        assert_eq!(parse("three days ago", NOW), parse("3 days ago", NOW));
        assert_eq!(parse("a day ago", NOW), parse("yesterday", NOW));
        assert_eq!(
            parse("a couple of days ago", NOW),
            parse("two days ago", NOW)
        );
        // Weeks ago: the Monday-to-Sunday week containing the day 7N days back.
        assert_eq!(
            parse("a week ago", NOW),
            Some(days(2024, 5, 6, 2024, 5, 13))
        );
        assert_eq!(
            parse("two weeks ago", NOW),
            Some(days(2024, 4, 29, 2024, 5, 6))
        );
        assert_eq!(parse("a week ago", NOW), parse("last week", NOW));
        // Months ago: calendar months, across a year boundary too.
        assert_eq!(
            parse("two months ago", NOW),
            Some(days(2024, 3, 1, 2024, 4, 1))
        );
        assert_eq!(
            parse("six months ago", NOW),
            Some(days(2023, 11, 1, 2023, 12, 1))
        );
        assert_eq!(
            parse("twelve months ago", NOW),
            Some(days(2023, 5, 1, 2023, 6, 1))
        );
        assert_eq!(
            parse("two years ago", NOW),
            Some(days(2022, 1, 1, 2023, 1, 1))
        );
    }

    #[test]
    fn calendar_weeks_months_years() {
        assert_eq!(parse("last week", NOW), Some(days(2024, 5, 6, 2024, 5, 13)));
        assert_eq!(
            parse("earlier this week", NOW),
            Some(days(2024, 5, 13, 2024, 5, 20))
        );
        assert_eq!(parse("last month", NOW), Some(days(2024, 4, 1, 2024, 5, 1)));
        assert_eq!(parse("this month", NOW), Some(days(2024, 5, 1, 2024, 6, 1)));
        assert_eq!(parse("last year", NOW), Some(days(2023, 1, 1, 2024, 1, 1)));
        assert_eq!(parse("this year", NOW), Some(days(2024, 1, 1, 2025, 1, 1)));
        // January: last month is December of the year before.
        let jan = day_ms(2025, 1, 10) + 5;
        assert_eq!(
            parse("last month", jan),
            Some(days(2024, 12, 1, 2025, 1, 1))
        );
    }

    #[test]
    fn rolling_spans_end_today() {
        assert_eq!(
            parse("in the past 3 days", NOW),
            Some(days(2024, 5, 12, 2024, 5, 16))
        );
        assert_eq!(
            parse("over the last two weeks", NOW),
            Some(days(2024, 5, 1, 2024, 5, 16))
        );
        assert_eq!(
            parse("the past week", NOW),
            Some(days(2024, 5, 8, 2024, 5, 16))
        );
        assert_eq!(parse("recently", NOW), Some(days(2024, 5, 1, 2024, 5, 16)));
        assert_eq!(
            parse("what have I told you lately", NOW),
            parse("recently", NOW)
        );
    }

    #[test]
    fn weekdays_are_the_most_recent_before_today() {
        // Today is Wednesday 15 May.
        assert_eq!(
            parse("on Monday", NOW),
            Some(days(2024, 5, 13, 2024, 5, 14))
        );
        assert_eq!(parse("last Monday", NOW), parse("on Monday", NOW));
        assert_eq!(
            parse("what did I say on Thursday", NOW),
            Some(days(2024, 5, 9, 2024, 5, 10))
        );
        // The same weekday as today means a week ago, not today.
        assert_eq!(
            parse("on Wednesday", NOW),
            Some(days(2024, 5, 8, 2024, 5, 9))
        );
        assert_eq!(parse("next Monday", NOW), None);
    }

    #[test]
    fn weekends() {
        assert_eq!(
            parse("last weekend", NOW),
            Some(days(2024, 5, 11, 2024, 5, 13))
        );
        assert_eq!(parse("over the weekend", NOW), parse("last weekend", NOW));
        // On a Sunday "the weekend" is the one we are in, "last weekend" the one before.
        let sunday = day_ms(2024, 5, 19) + 10 * HOUR_MS;
        assert_eq!(
            parse("the weekend", sunday),
            Some(days(2024, 5, 18, 2024, 5, 20))
        );
        assert_eq!(
            parse("last weekend", sunday),
            Some(days(2024, 5, 11, 2024, 5, 13))
        );
    }

    #[test]
    fn months_by_name() {
        // Most recent May not after now: this May, since it is May.
        assert_eq!(
            parse("What did I say in May?", NOW),
            Some(days(2024, 5, 1, 2024, 6, 1))
        );
        // June has not come yet this year, so last year's.
        assert_eq!(parse("in June", NOW), Some(days(2023, 6, 1, 2023, 7, 1)));
        assert_eq!(parse("in March", NOW), Some(days(2024, 3, 1, 2024, 4, 1)));
        assert_eq!(
            parse("in May 2023", NOW),
            Some(days(2023, 5, 1, 2023, 6, 1))
        );
        assert_eq!(parse("last May", NOW), Some(days(2023, 5, 1, 2023, 6, 1)));
        assert_eq!(
            parse("back in December", NOW),
            Some(days(2023, 12, 1, 2024, 1, 1))
        );
        // February of a leap year ends on the 29th.
        assert_eq!(
            parse("in February", NOW),
            Some(days(2024, 2, 1, 2024, 3, 1))
        );
        // "may" the verb is not a month.
        assert_eq!(parse("May I ask you something?", NOW), None);
    }

    #[test]
    fn dates_by_day_and_month() {
        assert_eq!(parse("on 8 May", NOW), Some(days(2024, 5, 8, 2024, 5, 9)));
        assert_eq!(parse("on May 8th", NOW), parse("on 8 May", NOW));
        assert_eq!(parse("the 8th of May", NOW), parse("on 8 May", NOW));
        // 20 May is still to come this year: the one before.
        assert_eq!(
            parse("on 20 May", NOW),
            Some(days(2023, 5, 20, 2023, 5, 21))
        );
        assert_eq!(
            parse("on 3 June 2022", NOW),
            Some(days(2022, 6, 3, 2022, 6, 4))
        );
        assert_eq!(parse("on 30 February", NOW), None);
    }

    #[test]
    fn years_and_since() {
        assert_eq!(parse("in 2022", NOW), Some(days(2022, 1, 1, 2023, 1, 1)));
        assert_eq!(parse("I have 2022 reasons", NOW), None);
        assert_eq!(
            parse("since last week", NOW),
            Some(days(2024, 5, 6, 2024, 5, 16))
        );
        assert_eq!(
            parse("since March", NOW),
            Some(days(2024, 3, 1, 2024, 5, 16))
        );
    }

    #[test]
    fn no_time_named() {
        assert_eq!(parse("What did we talk about last time?", NOW), None);
        assert_eq!(parse("Where do I live?", NOW), None);
        assert_eq!(parse("next week", NOW), None);
        assert_eq!(parse("tomorrow", NOW), None);
        assert_eq!(parse("", NOW), None);
        assert_eq!(parse("¿Qué? 日本語 ’’ ...", NOW), None);
        // The first cue wins even after "last time".
        assert_eq!(parse("last time, on Monday", NOW), parse("on Monday", NOW));
    }

    #[test]
    fn ranges_contain_their_own_start_but_not_their_end() {
        let r = parse("yesterday", NOW).unwrap();
        assert!(r.contains(r.start_ms));
        assert!(r.contains(r.end_ms - 1));
        assert!(!r.contains(r.end_ms));
        assert!(!r.contains(NOW));
    }

    #[test]
    fn describe_dates_for_callers() {
        assert_eq!(describe(NOW - HOUR_MS, NOW), "today");
        // Just after midnight yesterday is still yesterday, whatever the hour now.
        assert_eq!(describe(day_ms(2024, 5, 14) + 1, NOW), "yesterday");
        assert_eq!(describe(day_ms(2024, 5, 13) + 1, NOW), "on Monday");
        assert_eq!(describe(day_ms(2024, 5, 9), NOW), "on Thursday");
        // A week ago a weekday would be ambiguous: the date instead.
        assert_eq!(describe(day_ms(2024, 5, 8), NOW), "on 8 May");
        assert_eq!(describe(day_ms(2024, 1, 2), NOW), "on 2 January");
        assert_eq!(describe(day_ms(2023, 5, 8), NOW), "on 8 May 2023");
        assert_eq!(describe(day_ms(1970, 1, 1), NOW), "on 1 January 1970");
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        for now in [i64::MIN, i64::MAX, 0, -1] {
            for q in [
                "today",
                "last week",
                "in May",
                "3 years ago",
                "since 2020",
                "recently",
            ] {
                let _ = parse(q, now);
            }
            let _ = describe(now, 0);
            let _ = describe(0, now);
        }
    }
}
