//! Retention without a restic call when it would remove nothing.
//!
//! Every restic call pays its key derivation and loads the index (about
//! 0.5 s on 2 cores), and an hourly backup that only adds a new hour removes
//! nothing under the default tiers until its history is full. So the
//! backup keeps, per repository stage, the times of this node's backups as
//! restic last reported them (`backups/<stage>.retention`) plus those made
//! since, and runs `restic forget` only when restic's own policy, applied
//! to that list, would remove one — when a backup falls out of a tier (a
//! second backup in one hour, the 25th hour of `--keep-hourly 24`, …).
//!
//! A backup that falls out of a tier when it is a day old or more (the
//! hourly tier's 25th hour, every hour once the history is full) is not
//! worth a restic call of its own: it waits for the daily ask ([`REFRESH`]),
//! kept at most a day longer than the policy says. Only a removal of a
//! younger backup (a second backup in one hour, a small `--keep-*`) asks
//! restic at once. So an hourly job in its steady state calls `forget` and
//! `prune` once a day, not every hour.
//!
//! The list is a hint, never the judge: restic's `forget` decides what is
//! removed, and its answer replaces the list. A list that is missing, of
//! another node, or older than [`REFRESH`] (another machine backing up the
//! same node, a `restic forget` by hand) makes the run call restic anyway.
//! A wrong hint can only delay a removal to a later run, never remove a
//! backup.

use super::Retention;
use std::path::Path;

/// Restic is asked at least this often (seconds of backup time), whatever the list says.
pub const REFRESH: i64 = 24 * 3600;

/// A backup at least this old (from the new one) that the policy removes
/// waits for the next [`REFRESH`] ask instead of asking restic at once.
pub const DEFER: i64 = REFRESH;

/// One backup as retention sees it: its instant (order) and its wall
/// clock in the zone restic recorded it in (the tiers' buckets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub id: String,
    /// Seconds since the epoch.
    pub unix: i64,
    /// The recorded zone's offset from UTC, in seconds.
    pub offset: i64,
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

/// The civil date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + (m <= 2) as i64, m, d)
}

/// Restic's buckets of one wall clock: hour, day, ISO week, month, year.
fn buckets(local: i64) -> [i64; 5] {
    let days = local.div_euclid(86_400);
    let hour = local.rem_euclid(86_400) / 3600;
    let (y, m, d) = civil_from_days(days);
    // ISO week: the week's Thursday decides its year (1970-01-01 was a Thursday).
    let thursday = days - (days + 3).rem_euclid(7) + 3;
    let (wy, _, _) = civil_from_days(thursday);
    let week = (thursday - days_from_civil(wy, 1, 1)) / 7 + 1;
    [
        y * 1_000_000 + m * 10_000 + d * 100 + hour,
        y * 10_000 + m * 100 + d,
        wy * 100 + week,
        y * 100 + m,
        y,
    ]
}

impl Stamp {
    /// A time as restic prints it (`2026-03-02T15:30:00.123+01:00`, `…Z`).
    pub fn parse(id: &str, t: &str) -> Option<Stamp> {
        let num = |s: Option<&str>| s?.parse::<i64>().ok();
        let (date, rest) = t.split_once('T')?;
        let mut d = date.splitn(3, '-');
        let (y, mo, da) = (num(d.next())?, num(d.next())?, num(d.next())?);
        let (hh, mm, ss) = (num(rest.get(0..2))?, num(rest.get(3..5))?, num(rest.get(6..8))?);
        let tail = rest.get(8..)?;
        let offset = match tail.find(['Z', '+', '-']).map(|i| &tail[i..]) {
            None | Some("Z") => 0,
            Some(z) => {
                let sign = if z.starts_with('-') { -1 } else { 1 };
                sign * (num(z.get(1..3))? * 3600 + num(z.get(4..6))? * 60)
            }
        };
        let local = days_from_civil(y, mo, da) * 86_400 + hh * 3600 + mm * 60 + ss;
        Some(Stamp {
            id: id.to_string(),
            unix: local - offset,
            offset,
        })
    }

    /// `restic backup --time` (`2026-03-02 15:30:00`, the local wall clock),
    /// read in the zone `offset`.
    pub fn from_wall_clock(id: &str, t: &str, offset: i64) -> Option<Stamp> {
        let mut s = Stamp::parse(id, &format!("{}Z", t.trim().replacen(' ', "T", 1)))?;
        s.unix -= offset;
        s.offset = offset;
        Some(s)
    }

    fn buckets(&self) -> [i64; 5] {
        buckets(self.unix + self.offset)
    }
}

/// Whether restic 0.14's policy (`ApplyPolicy`, one group) removes any of
/// `list`.
pub fn would_remove(list: &[Stamp], keep: &Retention) -> bool {
    !removed(list, keep).is_empty()
}

/// What restic 0.14's policy (`ApplyPolicy`, one group) removes of `list`:
/// newest first, each tier keeps the first backup of each new bucket while
/// its count lasts; a backup no tier keeps is removed.
pub fn removed<'a>(list: &'a [Stamp], keep: &Retention) -> Vec<&'a Stamp> {
    let mut sorted: Vec<&Stamp> = list.iter().collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.unix));
    let counts = [
        keep.last.unwrap_or(0),
        keep.hourly,
        keep.daily,
        keep.weekly,
        keep.monthly,
        keep.yearly,
    ];
    let mut left = counts.map(i64::from);
    let mut last = [None::<i64>; 6];
    let mut gone = Vec::new();
    for (nr, s) in sorted.iter().enumerate() {
        let b = s.buckets();
        let vals = [nr as i64, b[0], b[1], b[2], b[3], b[4]];
        let mut kept = false;
        for i in 0..6 {
            if left[i] > 0 && last[i] != Some(vals[i]) {
                kept = true;
                last[i] = Some(vals[i]);
                left[i] -= 1;
            }
        }
        if !kept {
            gone.push(*s);
        }
    }
    gone
}

/// The list kept for `node` in `path`: the time restic was last asked and
/// the backups. `None` when missing, unreadable or another node's.
pub fn load(path: &Path, node: &str) -> Option<(i64, Vec<Stamp>)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let mut head = lines.next()?.split_whitespace();
    if head.next()? != "ailee-retention-1" || head.next()? != format!("node={node}") {
        return None;
    }
    let asked = head.next()?.strip_prefix("asked=")?.parse().ok()?;
    let mut list = Vec::new();
    for l in lines {
        let mut f = l.split_whitespace();
        let (id, unix, offset) = (f.next()?, f.next()?.parse().ok()?, f.next()?.parse().ok()?);
        list.push(Stamp {
            id: id.to_string(),
            unix,
            offset,
        });
    }
    Some((asked, list))
}

/// Writes the list (atomically; a failure only costs a restic call next time).
pub fn store(path: &Path, node: &str, asked: i64, list: &[Stamp]) -> ailee_core::Result<()> {
    let mut text = format!("ailee-retention-1 node={node} asked={asked}\n");
    for s in list {
        text.push_str(&format!("{} {} {}\n", s.id, s.unix, s.offset));
    }
    let mut p = ailee_core::atomic::Pending::create(path, true)?;
    p.write_all(text.as_bytes())?;
    p.commit()
}

/// Whether restic must be asked after the backup `new`: no usable list, a
/// list not refreshed for [`REFRESH`], or a removal by the policy of a
/// backup younger than [`DEFER`].
pub fn must_ask(kept: Option<&(i64, Vec<Stamp>)>, new: &Stamp, keep: &Retention) -> bool {
    let Some((asked, list)) = kept else {
        return true;
    };
    if new.unix < *asked || new.unix - asked >= REFRESH || list.iter().any(|s| s.unix > new.unix) {
        return true;
    }
    let mut all = list.clone();
    all.push(new.clone());
    removed(&all, keep).iter().any(|s| new.unix - s.unix < DEFER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: &str) -> Stamp {
        Stamp::parse("x", t).unwrap()
    }

    fn policy(last: Option<u32>, h: u32, d: u32, w: u32, m: u32) -> Retention {
        Retention {
            last,
            hourly: h,
            daily: d,
            weekly: w,
            monthly: m,
            yearly: 0,
        }
    }

    #[test]
    fn restic_times_parse_with_their_zone() {
        let a = at("2026-03-02T15:30:00.123456789+01:00");
        assert_eq!(a.unix, at("2026-03-02T14:30:00Z").unix);
        assert_eq!(a.offset, 3600);
        // The buckets are the recorded wall clock's (restic's own rule).
        assert_eq!(a.buckets()[0], 2026030215);
        let b = Stamp::from_wall_clock("y", "2026-03-02 15:30:00", -5 * 3600).unwrap();
        assert_eq!(b.unix, at("2026-03-02T20:30:00Z").unix);
        assert_eq!(b.buckets()[0], 2026030215);
    }

    #[test]
    fn iso_weeks_cross_years_as_restic_counts_them() {
        // 2021-01-03 is a Sunday of ISO week 53 of 2020; 2024-12-30 is week 1 of 2025.
        assert_eq!(at("2021-01-03T12:00:00Z").buckets()[2], 202053);
        assert_eq!(at("2021-01-04T12:00:00Z").buckets()[2], 202101);
        assert_eq!(at("2024-12-30T12:00:00Z").buckets()[2], 202501);
        assert_eq!(civil_from_days(days_from_civil(2028, 2, 29)), (2028, 2, 29));
    }

    #[test]
    fn the_policy_removes_what_restic_removes() {
        let hours: Vec<Stamp> = (0..5).map(|h| at(&format!("2026-03-02T1{h}:30:00Z"))).collect();
        let tiers = policy(None, 24, 7, 4, 6);
        assert!(!would_remove(&hours, &tiers), "five hours fit in 24 hourly");
        let mut same_hour = hours.clone();
        same_hour.push(at("2026-03-02T14:40:00Z"));
        assert!(would_remove(&same_hour, &tiers), "the older of one hour goes");
        assert!(would_remove(&hours, &policy(None, 3, 0, 0, 0)));
        assert!(
            would_remove(&hours, &policy(None, 3, 1, 0, 0)),
            "10:30 and 11:30 are in no tier"
        );
        assert!(
            would_remove(&hours, &policy(None, 4, 2, 0, 0)),
            "one day: its daily is its newest"
        );
        assert!(would_remove(&hours, &policy(Some(1), 0, 0, 0, 0)));
        assert!(!would_remove(&hours, &policy(Some(5), 0, 0, 0, 0)));
        // 25 hours with 24 hourly and one daily: the first hour is the
        // newest of its day only when it is the day's last.
        let day: Vec<Stamp> = (0..25)
            .map(|h| at(&format!("2026-03-{:02}T{:02}:00:00Z", 2 + h / 24, h % 24)))
            .collect();
        assert!(would_remove(&day, &policy(None, 24, 0, 0, 0)));
        assert!(would_remove(&day, &policy(None, 23, 1, 0, 0)));
        let evening: Vec<Stamp> = (0..25)
            .map(|h| at(&format!("2026-03-{:02}T{:02}:00:00Z", 2 + (h + 23) / 24, (h + 23) % 24)))
            .collect();
        assert!(!would_remove(&evening, &policy(None, 24, 2, 0, 0)));
        assert!(would_remove(&evening, &policy(None, 24, 1, 0, 0)));
    }

    #[test]
    fn restic_is_asked_without_a_fresh_list_or_on_a_removal() {
        let tiers = policy(None, 24, 7, 4, 6);
        let t0 = at("2026-03-02T10:00:00Z");
        let new = at("2026-03-02T11:00:00Z");
        assert!(must_ask(None, &new, &tiers));
        let kept = (t0.unix, vec![t0.clone()]);
        assert!(!must_ask(Some(&kept), &new, &tiers));
        assert!(
            must_ask(Some(&kept), &at("2026-03-03T10:00:00Z"), &tiers),
            "a day without asking"
        );
        assert!(
            must_ask(Some(&kept), &at("2026-03-02T09:00:00Z"), &tiers),
            "a backup dated earlier"
        );
        assert!(must_ask(Some(&kept), &at("2026-03-02T10:10:00Z"), &tiers), "same hour");
        // The steady state of an hourly job: 24 hourly backups, the 25th
        // hour pushes the oldest out of the hourly tier (not the newest of
        // its day): removed by the policy, but it waits for the daily ask.
        let day: Vec<Stamp> = (0..24).map(|h| at(&format!("2026-03-02T{h:02}:30:00Z"))).collect();
        let next = at("2026-03-03T00:30:00Z");
        let mut all = day.clone();
        all.push(next.clone());
        let hourly = policy(None, 24, 0, 0, 0);
        assert_eq!(removed(&all, &hourly).len(), 1);
        let full = (day[23].unix, day.clone());
        assert!(!must_ask(Some(&full), &next, &hourly), "a day-old backup waits");
        assert!(
            must_ask(Some(&(day[0].unix, day.clone())), &next, &hourly),
            "the daily ask removes it"
        );
        assert!(
            must_ask(Some(&full), &at("2026-03-02T23:40:00Z"), &hourly),
            "a second backup in one hour is removed at once"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r");
        store(&p, "n1", kept.0, &kept.1).unwrap();
        assert_eq!(load(&p, "n1"), Some(kept));
        assert_eq!(load(&p, "n2"), None, "another node's list is not used");
    }
}
