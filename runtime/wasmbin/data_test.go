package wasmbin

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/tetratelabs/wazero"
)

// dataModule is a module with a memory of pages pages, exported, and a data
// section of the given segments (raw).
func dataModule(pages byte, segs ...[]byte) []byte {
	return concat(magic, version,
		section(5, 1, 0x00, pages),
		section(7, concat([]byte{1}, name("memory"), []byte{byte(KindMemory), 0})...),
		dataSection(segs...))
}

func dataSection(segs ...[]byte) []byte {
	data := binary.AppendUvarint(nil, uint64(len(segs)))
	for _, s := range segs {
		data = append(data, s...)
	}
	return section(dataSectionID, data...)
}

// active encodes an active segment of memory 0 at an i32.const offset.
func active(off int32, init []byte) []byte {
	b := appendSleb([]byte{0x00, 0x41}, int64(off))
	b = append(b, 0x0b)
	b = binary.AppendUvarint(b, uint64(len(init)))
	return append(b, init...)
}

// memoryImage instantiates wasm in wazero and returns its memory.
func memoryImage(t *testing.T, wasm []byte) []byte {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	mod, err := rt.Instantiate(ctx, wasm)
	if err != nil {
		t.Fatalf("instantiating: %v", err)
	}
	mem, _ := mod.ExportedMemory("memory").Read(0, mod.ExportedMemory("memory").Size())
	return bytes.Clone(mem)
}

// TestMergeData: random segments, apart by gaps on either side of maxGap and
// in any order, merge exactly where the gap is under it, and wazero builds
// the same memory from the merged module as from the original.
func TestMergeData(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	gaps := []int{0, 1, 100, 4095, 4096, 10000}
	for round := range 20 {
		var segs [][]byte
		off, want := rnd.IntN(64), 1
		for i := range 50 {
			if i > 0 {
				gap := gaps[rnd.IntN(len(gaps))]
				if gap >= 4096 {
					want++
				}
				off += gap
			}
			init := make([]byte, 1+rnd.IntN(300))
			for j := range init {
				init[j] = byte(1 + rnd.IntN(255))
			}
			segs = append(segs, active(int32(off), init))
			off += len(init)
		}
		if round%2 == 1 { // as Go's linker does: one run of segments before another
			k := rnd.IntN(len(segs))
			segs = append(segs[k:], segs[:k]...)
		}
		wasm := dataModule(8, segs...)
		merged, err := MergeData(wasm, 4096)
		if err != nil {
			t.Fatal(err)
		}
		got, ok, err := dataSegments(merged)
		if err != nil || !ok || len(got) != want {
			t.Fatalf("round %d: %d segments (ok %v, %v), want %d", round, len(got), ok, err, want)
		}
		if !bytes.Equal(memoryImage(t, merged), memoryImage(t, wasm)) {
			t.Fatalf("round %d: the merged module's memory differs", round)
		}
	}
}

// TestMergeDataLeavesAlone: a module where merging could be told apart, or
// with nothing to merge, comes back as it is.
func TestMergeDataLeavesAlone(t *testing.T) {
	a, b := []byte("aaaa"), []byte("bbbb")
	passive := concat([]byte{0x01}, binary.AppendUvarint(nil, 4), b)
	explicitMemory := concat([]byte{0x02, 0x00, 0x41, 8, 0x0b, 4}, b)
	globalOffset := concat([]byte{0x00, 0x23, 0, 0x0b, 4}, b)
	withDataCount := concat(magic, version, section(5, 1, 0x00, 1), section(dataCountSectionID, 2),
		dataSection(active(0, a), active(8, b)))
	importedMemory := concat(magic, version,
		section(2, concat([]byte{1}, name("env"), name("mem"), []byte{byte(KindMemory), 0x00, 1})...),
		dataSection(active(0, a), active(8, b)))
	for name, wasm := range map[string][]byte{
		"apart":                     dataModule(1, active(0, a), active(8000, b)),
		"overlapping":               dataModule(1, active(0, a), active(2, b)),
		"overlapping, out of order": dataModule(1, active(8, a), active(0, b), active(6, a)),
		"passive":                   dataModule(1, active(0, a), passive),
		"explicit memory":           dataModule(1, active(0, a), explicitMemory),
		"global offset":             dataModule(1, active(0, a), globalOffset),
		"data count":                withDataCount,
		"imported memory":           importedMemory,
		"one segment":               dataModule(1, active(0, a)),
	} {
		got, err := MergeData(wasm, 4096)
		if err != nil || !bytes.Equal(got, wasm) {
			t.Errorf("%s: rewritten (%v)", name, err)
		}
	}
	// The cases above are not rejected for being malformed: with their
	// segments in order and apart by less, they would be merged.
	if got, _ := MergeData(dataModule(1, active(0, a), active(8, b)), 4096); bytes.Equal(got, dataModule(1, active(0, a), active(8, b))) {
		t.Error("two segments 4 bytes apart were not merged")
	}
}

// TestMergeDataGoTools: the Go-built example tools (tens of thousands of
// segments) merge to a handful that lay out the same bytes.
func TestMergeDataGoTools(t *testing.T) {
	for _, tool := range []string{"textkit", "ghstars"} {
		wasm, err := os.ReadFile(filepath.Join("..", "..", "tools", tool, tool+".wasm"))
		if err != nil {
			t.Fatal(err)
		}
		merged, err := MergeData(wasm, 4096)
		if err != nil {
			t.Fatal(err)
		}
		before, ok1, err1 := dataSegments(wasm)
		after, ok2, err2 := dataSegments(merged)
		if !ok1 || !ok2 || err1 != nil || err2 != nil {
			t.Fatalf("%s: %v %v %v %v", tool, ok1, ok2, err1, err2)
		}
		if !bytes.Equal(image(before), image(after)) {
			t.Errorf("%s: the merged segments lay out other bytes", tool)
		}
		t.Logf("%s: %d segments → %d; %d → %d bytes", tool, len(before), len(after), len(wasm), len(merged))
		if len(after) > 16 || len(before) < 1000 {
			t.Errorf("%s: %d segments → %d", tool, len(before), len(after))
		}
	}
}

// image lays segments out in a byte slice.
func image(segs []Segment) []byte {
	var b []byte
	for _, s := range segs {
		if end := int(s.Offset) + len(s.Init); end > len(b) {
			b = append(b, make([]byte, end-len(b))...)
		}
		copy(b[s.Offset:], s.Init)
	}
	return b
}

func TestSleb(t *testing.T) {
	for _, v := range []int32{0, 1, -1, 63, 64, -64, -65, 1 << 20, -1 << 31, 1<<31 - 1} {
		r := reader{b: appendSleb(nil, int64(v))}
		if got, err := r.sleb32(); err != nil || got != v || r.off != len(r.b) {
			t.Errorf("%d: read back %d (%v)", v, got, err)
		}
	}
	r := reader{b: []byte{0x80, 0x80, 0x80, 0x80, 0x08}} // 2^31
	if _, err := r.sleb32(); err == nil {
		t.Error(fmt.Sprint("2^31 read as an int32"))
	}
}
