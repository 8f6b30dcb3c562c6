package sqlite

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/migrations"
)

// ErrRestore: a restore refused its source or its target.
var ErrRestore = errors.New("restore refused")

// Restore fills the data directory dir, which must be missing or empty,
// from the backup in from (see Backend.Backup), after checking that the
// backup is complete and intact: its manifest lists every file a backup
// has, each with the size and SHA-256 it was written with, and no schema
// newer than this build knows. The read models are not in a backup: the
// first start projects them again. It returns the manifest.
func Restore(from, dir string) (store.Backup, error) {
	m, err := Verify(from)
	if err != nil {
		return m, err
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return m, fmt.Errorf("%w: the data directory %s is not empty", ErrRestore, dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return m, fmt.Errorf("%w: %v", ErrRestore, err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return m, fmt.Errorf("%w: %v", ErrRestore, err)
	}
	for _, f := range m.Files {
		if err := copyFile(filepath.Join(from, f.Name), filepath.Join(dir, f.Name)); err != nil {
			return m, err
		}
	}
	return m, nil
}

// Verify reads the manifest of the backup in from and checks every file
// against it.
func Verify(from string) (store.Backup, error) {
	var m store.Backup
	body, err := os.ReadFile(filepath.Join(from, ManifestName))
	if err != nil {
		return m, fmt.Errorf("%w: %s is not a complete backup (no readable %s): %v", ErrRestore, from, ManifestName, err)
	}
	if err := json.Unmarshal(body, &m); err != nil || m.Format != 1 {
		return m, fmt.Errorf("%w: %s: not a format 1 manifest", ErrRestore, ManifestName)
	}
	listed := map[string]store.BackupFile{}
	for _, f := range m.Files {
		listed[f.Name] = f
	}
	for _, want := range backupFiles {
		f, ok := listed[want.name]
		if !ok && want.optional {
			continue
		}
		if !ok {
			return m, fmt.Errorf("%w: the manifest lists no %s", ErrRestore, want.name)
		}
		if known := latestSchema(want.schema); f.Schema > known {
			return m, fmt.Errorf("%w: %s has schema %d, newer than this orderd's %d: restore with the orderd that took it", ErrRestore, f.Name, f.Schema, known)
		}
		size, sum, err := checksum(filepath.Join(from, f.Name))
		if err != nil {
			return m, fmt.Errorf("%w: %s: %v", ErrRestore, f.Name, err)
		}
		if size != f.Size || sum != f.SHA256 {
			return m, fmt.Errorf("%w: %s does not match the manifest (%d bytes, sha256 %s; the manifest says %d bytes, %s): the backup is damaged or was changed",
				ErrRestore, f.Name, size, sum, f.Size, f.SHA256)
		}
	}
	known := map[string]bool{}
	for _, f := range backupFiles {
		known[f.name] = true
	}
	for name := range listed {
		if !known[name] {
			return m, fmt.Errorf("%w: the manifest lists %s, which is no file of a backup", ErrRestore, name)
		}
	}
	return m, nil
}

// latestSchema is the number of the last migration of the schema directory
// dir that this build has.
func latestSchema(dir string) int {
	entries, _ := fs.ReadDir(migrations.SQLite, dir)
	n := 0
	for _, e := range entries {
		num, _, _ := strings.Cut(e.Name(), "_")
		if v, err := strconv.Atoi(num); err == nil && v > n {
			n = v
		}
	}
	return n
}

// copyFile copies src to the new file dst through a temporary name, synced
// before the rename.
func copyFile(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".restoring"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err = errors.Join(err, out.Sync(), out.Close()); err != nil {
		return fmt.Errorf("restore %s: %w", filepath.Base(dst), err)
	}
	return os.Rename(tmp, dst)
}
