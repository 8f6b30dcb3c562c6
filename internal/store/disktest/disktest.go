// Package disktest gives tests a small file system of their own that they
// can fill: a tmpfs mounted in a temporary directory, to see how a store
// behaves when its disk is full.
//
// Mounting needs root. Without it, or when the mount fails, tests skip with
// the reason, except under CI=true, where they fail: a test that silently
// skips in CI proves nothing.
package disktest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// Mount mounts a tmpfs of size bytes in a fresh temporary directory and
// returns its path; it is unmounted when the test ends. Under go test
// -short (make quick) it skips t: mounting needs root and a mount helper.
func Mount(t testing.TB, size int64) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: mounts a tmpfs")
	}
	dir := t.TempDir()
	skip := func(reason string) {
		msg := "disktest: cannot mount a small file system: " + reason
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if os.Geteuid() != 0 {
		skip("mounting a tmpfs needs root")
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput(); err != nil {
		skip(fmt.Sprintf("mount -t tmpfs: %v: %s", err, out))
	}
	t.Cleanup(func() {
		// Lazy: a file the code under test left open must not fail the
		// test; the kernel frees the tmpfs when the last one closes.
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("disktest: umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// Fill writes a file into dir until the file system has no room left, and
// returns its path: removing it frees the space again.
func Fill(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("disktest: fill %s: %v", dir, err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for len(chunk) > 0 {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("disktest: fill %s: %v", dir, err)
			}
			chunk = chunk[:len(chunk)/2] // the last pages, down to the byte
		}
	}
	return path
}

// Free removes the file Fill wrote.
func Free(t testing.TB, filler string) {
	t.Helper()
	if err := os.Remove(filler); err != nil {
		t.Fatalf("disktest: free: %v", err)
	}
}
