package store

import (
	"errors"
	"time"
)

// Errors of an online backup (POST /v1/admin/backups).
var (
	// ErrBackupTarget: the target directory cannot take a backup (not an
	// absolute path, not empty, not writable).
	ErrBackupTarget = errors.New("backup target refused")
	// ErrBackupRunning: another backup of this process has not ended.
	ErrBackupRunning = errors.New("a backup is running")
	// ErrBackupUnsupported: the engine has no online backup (CQL, whose
	// procedure is per-node snapshots; see docs/operations.md).
	ErrBackupUnsupported = errors.New("online backup not supported by this engine")
)

// Backup is what an online backup wrote: its manifest.
type Backup struct {
	// Format is the manifest's format, 1.
	Format int `json:"format"`
	// TakenAt is when the copy's consistent point was taken.
	TakenAt time.Time `json:"taken_at"`
	// Head is the feed position of the last event in the copy.
	Head int64 `json:"head"`
	// PausedFor is how long writes waited while the consistent point was
	// copied.
	PausedFor time.Duration `json:"paused_ns"`
	// Files are the copied files, in the order they were copied.
	Files []BackupFile `json:"files"`
}

// BackupFile is one file of a backup.
type BackupFile struct {
	Name   string `json:"name"`   // as in the data directory, e.g. "events.db"
	Size   int64  `json:"size"`   // bytes
	SHA256 string `json:"sha256"` // hex
	Schema int    `json:"schema"` // the last schema migration applied to it
}
