package archtest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// maxTrackedFileBytes bounds every file in the repository: source, docs and test data are small, and a
// file above this is almost always a built binary or a dump that was committed by mistake.
const maxTrackedFileBytes = 1 << 20

func TestNoLargeTrackedFiles(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("git", "ls-files", "-z")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, name := range bytes.Split(bytes.TrimRight(out, "\x00"), []byte{0}) {
		info, err := os.Lstat(filepath.Join(root, string(name)))
		if os.IsNotExist(err) {
			continue // deleted in the work tree, not yet committed
		}
		if err != nil {
			t.Fatal(err)
		}
		if info.Size() > maxTrackedFileBytes {
			t.Errorf("%s is tracked and %d bytes (limit %d): built binaries and dumps stay out of git", name, info.Size(), maxTrackedFileBytes)
		}
	}
}
