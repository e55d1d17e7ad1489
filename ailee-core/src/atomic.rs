//! Atomic output files (SPEC §2): write a temporary file in the target
//! directory, fsync, rename over the final name, fsync the directory.
//!
//! Until [`Pending::commit`] (or [`Batch::commit`]) nothing exists under the
//! final name; dropping an uncommitted output removes its temporary file, so
//! an error or an interrupt (SIGINT) leaves nothing half-written behind:
//! temporary files are registered with [`crate::cancel`], whose signal thread
//! removes them before the process dies by the signal. A SIGKILL can leave a
//! `.<name>.ailee-tmp.<pid>.<n>` file, never a partial final file; the next
//! run that writes in that directory removes those of dead processes
//! ([`reap`]).
//! Without `force`, the final name is claimed with `RENAME_NOREPLACE`, so an
//! output that appeared meanwhile is not replaced either.

use crate::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The directory a path lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// fsync of a directory, so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// An output being written under a temporary name.
#[derive(Debug)]
pub struct Pending {
    tmp: PathBuf,
    target: PathBuf,
    file: Option<File>,
    force: bool,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

impl Pending {
    /// Starts writing `target`; fails at once if it exists and `force` is off.
    pub fn create(target: &Path, force: bool) -> Result<Pending> {
        if !force && std::fs::symlink_metadata(target).is_ok() {
            return Err(Error::Exists(target.to_path_buf()));
        }
        Self::create_unchecked(target, force)
    }

    /// Like [`Pending::create`] without the early existence check, for callers
    /// that checked the directory once (e.g. thousands of extracted files);
    /// without `force` the final rename still never replaces a file.
    pub fn create_unchecked(target: &Path, force: bool) -> Result<Pending> {
        let name = target
            .file_name()
            .ok_or_else(|| Error::Usage(format!("{}: not a file name", target.display())))?;
        let dir = parent_dir(target);
        reap_once(&dir);
        let tmp = temp_name(&dir, name);
        let file = crate::cancel::create_registered(&tmp, false, || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| Error::io(&tmp, e))
        })?;
        Ok(Pending {
            tmp,
            target: target.to_path_buf(),
            file: Some(file),
            force,
        })
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The open temporary file (an error once the output was closed).
    pub fn file(&mut self) -> Result<&mut File> {
        let tmp = &self.tmp;
        self.file
            .as_mut()
            .ok_or_else(|| Error::io(tmp, io::Error::other("output already closed")))
    }

    /// Appends `data`, naming the temporary file in errors.
    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        let tmp = self.tmp.clone();
        self.file()?.write_all(data).map_err(|e| Error::io(tmp, e))
    }

    /// Copies `len` bytes of `src` from `offset`, in the kernel where it can.
    pub fn copy_range(&mut self, src: &File, offset: u64, len: u64) -> Result<()> {
        let tmp = self.tmp.clone();
        copy_range(src, offset, len, self.file()?).map_err(|e| Error::io(tmp, e))
    }

    fn close(&mut self, sync: bool) -> Result<()> {
        if let Some(f) = self.file.take() {
            if sync {
                f.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
            }
        }
        Ok(())
    }

    fn rename(&mut self) -> Result<()> {
        let tmp = self.tmp.clone();
        crate::cancel::release(&tmp, || self.rename_registered())
    }

    fn rename_registered(&mut self) -> Result<()> {
        let r = if self.force {
            std::fs::rename(&self.tmp, &self.target)
        } else {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &self.tmp,
                rustix::fs::CWD,
                &self.target,
                rustix::fs::RenameFlags::NOREPLACE,
            )
            .map_err(io::Error::from)
        };
        match r {
            Ok(()) => {
                self.tmp = PathBuf::new();
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::Exists(self.target.clone())),
            Err(e) => Err(Error::io(&self.target, e)),
        }
    }

    /// fsync, rename to the final name, fsync the directory.
    pub fn commit(mut self) -> Result<()> {
        self.close(true)?;
        self.rename()?;
        sync_dir(&parent_dir(&self.target))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.file.take();
        if !self.tmp.as_os_str().is_empty() {
            crate::cancel::release(&self.tmp, || std::fs::remove_file(&self.tmp).ok());
        }
    }
}

/// Many outputs in one directory committed together: one `syncfs` instead
/// of an fsync per file, then the renames, then one directory fsync. Each
/// file is still all-or-nothing under its final name.
#[derive(Debug, Default)]
pub struct Batch {
    files: Vec<Pending>,
}

impl Batch {
    pub fn push(&mut self, mut p: Pending) -> Result<()> {
        p.close(false)?;
        self.files.push(p);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Makes every file durable, then gives each its final name. The renames
    /// run as one critical section: a signal waits until all are done.
    pub fn commit(mut self, dir: &Path) -> Result<()> {
        let d = File::open(dir).map_err(|e| Error::io(dir, e))?;
        rustix::fs::syncfs(d.as_fd()).map_err(|e| Error::io(dir, e.into()))?;
        crate::cancel::check()?;
        crate::cancel::critical(|| {
            for p in &mut self.files {
                p.rename()?;
            }
            d.sync_all().map_err(|e| Error::io(dir, e))
        })
    }
}

/// Renames directory (or file) `from` to `to`: `to` must not exist, or with
/// `exchange` the two are swapped in one step (`RENAME_EXCHANGE`).
pub fn rename_dir(from: &Path, to: &Path, exchange: bool) -> Result<()> {
    let flags = if exchange {
        rustix::fs::RenameFlags::EXCHANGE
    } else {
        rustix::fs::RenameFlags::NOREPLACE
    };
    rustix::fs::renameat_with(rustix::fs::CWD, from, rustix::fs::CWD, to, flags).map_err(|e| Error::io(to, e.into()))
}

/// Makes everything written in the filesystem of `dir` durable (`syncfs`).
pub fn sync_fs(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| Error::io(dir, e))?;
    rustix::fs::syncfs(d.as_fd()).map_err(|e| Error::io(dir, e.into()))
}

/// A fresh temporary name for `name` in `dir`: `.<name>.ailee-tmp.<pid>.<n>`.
pub fn temp_name(dir: &Path, name: &std::ffi::OsStr) -> PathBuf {
    let mut n = std::ffi::OsString::from(".");
    n.push(name);
    n.push(format!(".ailee-tmp.{}.{}", pid(), SEQ.fetch_add(1, Ordering::Relaxed)));
    dir.join(n)
}

/// The process id in a temporary name of ours, if `name` is one.
fn temp_owner(name: &[u8]) -> Option<u32> {
    let at = memchr::memmem::rfind(name, b".ailee-tmp.")?;
    if name.first() != Some(&b'.') {
        return None;
    }
    let rest = std::str::from_utf8(&name[at + 11..]).ok()?;
    let (pid, seq) = rest.split_once('.')?;
    // `<n>` or `<n>.gone` (a staging directory a signal was removing).
    let seq = seq.strip_suffix(".gone").unwrap_or(seq);
    seq.parse::<u64>().ok()?;
    pid.parse().ok()
}

fn alive(pid: u32) -> bool {
    pid == self::pid() || Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the temporary files and directories of dead runs in `dir`
/// (`.<name>.ailee-tmp.<pid>.<n>` whose process no longer exists); returns
/// how many were removed. Errors are ignored: reaping is best effort.
pub fn reap(dir: &Path) -> usize {
    use std::os::unix::ffi::OsStrExt;
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    let mut n = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(owner) = temp_owner(name.as_bytes()) else {
            continue;
        };
        if alive(owner) {
            continue;
        }
        let p = e.path();
        let gone = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
            _ => std::fs::remove_file(&p),
        };
        n += gone.is_ok() as usize;
    }
    n
}

/// [`reap`] once per directory and process.
fn reap_once(dir: &Path) {
    static SEEN: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if !seen.iter().any(|d| d == dir) {
        seen.push(dir.to_path_buf());
        reap(dir);
    }
}

/// Copies `len` bytes of `src` at `offset` to the current position of `dst`
/// with `copy_file_range`, falling back to read/write where the kernel or
/// filesystem cannot.
pub fn copy_range(src: &File, mut offset: u64, mut len: u64, dst: &mut File) -> io::Result<()> {
    let mut kernel = true;
    let mut buf = Vec::new();
    while len > 0 {
        crate::cancel::check().map_err(|_| io::Error::new(io::ErrorKind::Interrupted, "interrupted"))?;
        let step = len.min(1 << 30) as usize;
        if kernel {
            match rustix::fs::copy_file_range(src, Some(&mut offset), &*dst, None, step) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "source shorter than expected",
                    ))
                }
                Ok(n) => {
                    len -= n as u64;
                    continue;
                }
                Err(
                    rustix::io::Errno::XDEV
                    | rustix::io::Errno::NOSYS
                    | rustix::io::Errno::INVAL
                    | rustix::io::Errno::OPNOTSUPP,
                ) => {
                    kernel = false;
                    buf = vec![0u8; 1 << 20];
                }
                Err(e) => return Err(e.into()),
            }
        }
        let n = (step.min(buf.len())) as u64;
        let got = src.read_at(&mut buf[..n as usize], offset)?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "source shorter than expected",
            ));
        }
        dst.write_all(&buf[..got])?;
        offset += got as u64;
        len -= got as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory and the output path `out` in it.
    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        (d, out)
    }

    #[test]
    fn nothing_under_the_final_name_until_commit() {
        let (_d, t) = scratch();
        let mut p = Pending::create(&t, false).unwrap();
        p.write_all(b"abc").unwrap();
        assert!(!t.exists());
        p.commit().unwrap();
        assert_eq!(std::fs::read(&t).unwrap(), b"abc");
    }

    #[test]
    fn dropped_output_leaves_no_file() {
        let (d, t) = scratch();
        let mut p = Pending::create(&t, false).unwrap();
        p.write_all(b"abc").unwrap();
        drop(p);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn existing_output_needs_force() {
        let (_d, t) = scratch();
        std::fs::write(&t, "old").unwrap();
        assert!(matches!(Pending::create(&t, false), Err(Error::Exists(_))));
        let mut p = Pending::create(&t, true).unwrap();
        p.write_all(b"new").unwrap();
        p.commit().unwrap();
        assert_eq!(std::fs::read(&t).unwrap(), b"new");
    }

    #[test]
    fn output_appearing_meanwhile_is_not_replaced() {
        let (d, t) = scratch();
        let p = Pending::create(&t, false).unwrap();
        std::fs::write(&t, "theirs").unwrap();
        assert!(matches!(p.commit(), Err(Error::Exists(_))));
        assert_eq!(std::fs::read(&t).unwrap(), b"theirs");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn batch_commits_all_files() {
        let d = tempfile::tempdir().unwrap();
        let mut b = Batch::default();
        for i in 0..3 {
            let mut p = Pending::create(&d.path().join(format!("f{i}")), false).unwrap();
            p.write_all(b"x").unwrap();
            b.push(p).unwrap();
        }
        b.commit(d.path()).unwrap();
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 3);
    }

    #[test]
    fn dead_runs_temporaries_are_reaped_live_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        // A pid above the kernel's maximum can never be alive.
        let dead = d.path().join(".snapshot_1.dat.ailee-tmp.99999999.3");
        let mine = d.path().join(format!(".x.ailee-tmp.{}.0", std::process::id()));
        let other = d.path().join(".x.ailee-tmp.notapid.0");
        let stage = d.path().join(".out.ailee-tmp.99999998.1.gone");
        for p in [&dead, &mine, &other] {
            std::fs::write(p, "x").unwrap();
        }
        std::fs::create_dir(&stage).unwrap();
        std::fs::write(stage.join("snapshot_1.dat"), "x").unwrap();
        assert_eq!(reap(d.path()), 2);
        assert!(!dead.exists() && !stage.exists());
        assert!(mine.exists() && other.exists());
    }

    #[test]
    fn copy_range_copies_the_slice() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path().join("s");
        std::fs::write(&s, b"0123456789").unwrap();
        let t = d.path().join("t");
        let mut p = Pending::create(&t, false).unwrap();
        p.copy_range(&File::open(&s).unwrap(), 2, 5).unwrap();
        p.commit().unwrap();
        assert_eq!(std::fs::read(&t).unwrap(), b"23456");
    }
}
