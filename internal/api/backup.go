package api

import (
	"context"
	"net/http"
	"path/filepath"

	"github.com/orderd/orderd/internal/store"
)

// Backups is what the admin API needs of the engine's online backup.
type Backups interface {
	// Backup copies the running deployment into dir, an absolute path on
	// the server's host, missing or empty, and returns the manifest. Its
	// errors wrap store.ErrBackupTarget, store.ErrBackupRunning or
	// store.ErrBackupUnsupported.
	Backup(ctx context.Context, dir string) (store.Backup, error)
}

// WithBackups serves POST /v1/admin/backups, behind the admin token of
// WithAdmin.
func (s *Server) WithBackups(b Backups) *Server {
	s.backups = b
	return s
}

// backupRequest is the body of POST /v1/admin/backups.
type backupRequest struct {
	To *string `json:"to"` // the target directory, on the server's host
}

// startBackup runs a backup to its end and answers its manifest: the
// copy's consistent point is taken within the request, and a client that
// gives up does not stop the copy (the backup is not bound to the
// request's context, so a half-written directory is never left because a
// proxy timed out).
func (s *Server) startBackup(w http.ResponseWriter, r *http.Request) error {
	var req backupRequest
	if err := decode(r, &req, false); err != nil {
		return err
	}
	if req.To == nil || *req.To == "" {
		return invalid("missing_field", "/to", "to, the target directory on the server's host, is required")
	}
	if !filepath.IsAbs(*req.To) {
		return invalid("invalid_field", "/to", "to must be an absolute path on the server's host")
	}
	m, err := s.backups.Backup(context.WithoutCancel(r.Context()), filepath.Clean(*req.To))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, m)
}
