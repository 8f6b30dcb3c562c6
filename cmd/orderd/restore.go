package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
)

// noBackups is the CQL engine's answer to POST /v1/admin/backups: a
// cluster is backed up node by node (docs/operations.md, Backups).
type noBackups struct{}

func (noBackups) Backup(context.Context, string) (store.Backup, error) {
	return store.Backup{}, fmt.Errorf("%w: back a cluster up with a snapshot on every node (nodetool snapshot); see docs/operations.md, Backups", store.ErrBackupUnsupported)
}

const restoreUsage = `usage: orderd restore -from DIR [flags]

Fills the embedded store's data directory (-data-dir, ORDERD_DATA_DIR),
which must be missing or empty, from a backup taken by orderd backup, after
checking every file against the backup's manifest. Runs without a server;
start orderd on the directory afterwards: it projects the read models again
from the first event. The flags are orderd's own:

`

// runRestore is `orderd restore -from DIR [flags]`: it fills the
// configured data directory (-data-dir), which must be missing or empty,
// from a backup taken by `orderd backup`, after checking the backup
// against its manifest. It takes orderd's usual flags besides -from, and
// runs without a server: start orderd on the directory afterwards, which
// projects the read models again from the first event.
func runRestore(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	from, rest, err := cutFlag(args, "from")
	if err != nil {
		return err
	}
	for _, a := range rest {
		if a == "-help" || a == "--help" || a == "-h" {
			fmt.Fprint(stderr, restoreUsage)
		}
	}
	cfg, err := parseConfig(rest, getenv, stderr)
	if err != nil {
		return err
	}
	if from == "" {
		return errors.New("restore: -from DIR, the backup's directory, is required")
	}
	if cfg.store != "sqlite" {
		return fmt.Errorf("restore: the store is %s: orderd restore fills the embedded store's -data-dir; restore a cluster from its nodes' snapshots (docs/operations.md)", cfg.store)
	}
	m, err := sqlite.Restore(from, cfg.dataDir)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	fmt.Fprintf(stdout, "restored %d files (events through position %d, taken %s) into %s; start orderd on it: it projects the read models again from the first event\n",
		len(m.Files), m.Head, m.TakenAt.Format("2006-01-02 15:04:05Z"), cfg.dataDir)
	return nil
}

// cutFlag takes the flag -name VALUE (or -name=VALUE, with one or two
// dashes) out of args and returns its value and the other arguments.
func cutFlag(args []string, name string) (value string, rest []string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		bare := strings.TrimLeft(a, "-")
		switch {
		case a != bare && bare == name:
			if i+1 == len(args) {
				return "", nil, fmt.Errorf("restore: -%s needs a value", name)
			}
			value = args[i+1]
			i++
		case a != bare && strings.HasPrefix(bare, name+"="):
			value = strings.TrimPrefix(bare, name+"=")
		default:
			rest = append(rest, a)
		}
	}
	return value, rest, nil
}
