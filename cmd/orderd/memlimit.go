package main

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path"
	"runtime/debug"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// memoryLimitShare is the part of the container's memory limit that orderd
// gives the Go runtime as its soft limit (debug.SetMemoryLimit) when
// GOMEMLIMIT is not set. The runtime counts its heap, stacks and own
// structures, not what is mapped outside it (SQLite's page cache is
// allocated by modernc's libc, outside the Go heap), the binary's text, or
// the file cache the cgroup also charges; 10% is left for those. With a
// limit, GOGC=400 (serverGCPercent) still spares the CPU while the heap is
// small, and the collector runs as often as needed when it nears the
// limit, rather than at five times the live heap, which is what lets a
// burst of large reads take a container over its limit and be killed.
const memoryLimitShare = 0.9

// noLimitAbove: a cgroup limit from this size up (1 EiB) is "no limit":
// cgroup v1 reports its unlimited as the largest page-aligned int64.
const noLimitAbove = int64(1) << 60

// The cgroup files the limit is read from, under the root of fsys.
const (
	procCgroup   = "proc/self/cgroup"
	cgroupV2Root = "sys/fs/cgroup"
	cgroupV1Root = "sys/fs/cgroup/memory"
	cgroupV2File = "memory.max"
	cgroupV1File = "memory.limit_in_bytes"
)

// parseCgroupLimit reads the contents of memory.max (cgroup v2: bytes, or
// "max") or memory.limit_in_bytes (cgroup v1: bytes, huge when unlimited).
// It returns the limit and true, or false when there is none, or an error
// for contents that are neither.
func parseCgroupLimit(contents string) (int64, bool, error) {
	s := strings.TrimSpace(contents)
	if s == "max" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case errors.Is(err, strconv.ErrRange) && s != "" && s[0] != '-':
		return 0, false, nil // beyond int64: unlimited
	case err != nil || n < 0:
		return 0, false, fmt.Errorf("memory limit %q is neither a number of bytes nor max", s)
	case n >= noLimitAbove:
		return 0, false, nil
	}
	return n, true, nil
}

// cgroupMemoryLimit returns the memory limit of the cgroup this process
// runs in, read from fsys, the root of the file system (os.DirFS("/")):
// the smallest limit of its cgroup and the cgroups above it, cgroup v2
// (memory.max) or v1 (memory.limit_in_bytes). In a container with its own
// cgroup namespace the container's cgroup is the root of the mount, and
// the path /proc/self/cgroup names (/) leads to it. It returns false when
// no limit is set or no cgroup memory controller is mounted, and an error
// when a limit file cannot be read or parsed.
func cgroupMemoryLimit(fsys fs.FS) (int64, bool, error) {
	v2, v1 := "/", "/"
	if b, err := fs.ReadFile(fsys, procCgroup); err == nil {
		for line := range strings.Lines(string(b)) {
			// hierarchy-ID:controller-list:cgroup-path
			parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
			if len(parts) != 3 {
				continue
			}
			switch {
			case parts[0] == "0" && parts[1] == "":
				v2 = parts[2]
			case strings.Contains(","+parts[1]+",", ",memory,"):
				v1 = parts[2]
			}
		}
	}
	limit, found, err := smallestLimit(fsys, cgroupV2Root, v2, cgroupV2File)
	if err != nil || found {
		return limit, found, err
	}
	return smallestLimit(fsys, cgroupV1Root, v1, cgroupV1File)
}

// smallestLimit reads file in the cgroup dir under root and in each of its
// ancestors up to root, and returns the smallest limit found. A cgroup
// directory that is not there (the path of a cgroup outside the namespace
// this process sees) is skipped.
func smallestLimit(fsys fs.FS, root, dir, file string) (int64, bool, error) {
	var (
		limit int64 = math.MaxInt64
		found bool
	)
	for d := path.Clean("/" + dir); ; d = path.Dir(d) {
		name := path.Join(root, d, file)
		b, err := fs.ReadFile(fsys, name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return 0, false, fmt.Errorf("read /%s: %w", name, err)
		default:
			n, ok, err := parseCgroupLimit(string(b))
			if err != nil {
				return 0, false, fmt.Errorf("/%s: %w", name, err)
			}
			if ok && n < limit {
				limit, found = n, true
			}
		}
		if d == "/" {
			return limit, found, nil
		}
	}
}

// applyMemoryLimit sets the Go runtime's soft memory limit to
// memoryLimitShare of the cgroup's limit, unless GOMEMLIMIT is set (the
// runtime has applied it) or the cgroup sets none, and logs the limit in
// force either way.
func applyMemoryLimit(getenv func(string) string, fsys fs.FS, log *zap.Logger) {
	if env := getenv("GOMEMLIMIT"); env != "" {
		log.Info("memory limit", zap.String("from", "GOMEMLIMIT"), zap.String("GOMEMLIMIT", env),
			zap.Int64("limit_bytes", debug.SetMemoryLimit(-1)))
		return
	}
	cgroup, ok, err := cgroupMemoryLimit(fsys)
	switch {
	case err != nil:
		log.Warn("memory limit", zap.String("from", "none"),
			zap.String("reason", "the cgroup's limit could not be read; set GOMEMLIMIT"), zap.Error(err))
	case !ok:
		log.Info("memory limit", zap.String("from", "none"), zap.String("reason", "no cgroup limit and no GOMEMLIMIT"))
	default:
		limit := int64(float64(cgroup) * memoryLimitShare)
		debug.SetMemoryLimit(limit)
		log.Info("memory limit", zap.String("from", "cgroup"), zap.Int64("cgroup_limit_bytes", cgroup),
			zap.Int64("limit_bytes", limit))
	}
}
