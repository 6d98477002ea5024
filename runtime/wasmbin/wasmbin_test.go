package wasmbin

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/tetratelabs/wazero"
)

// section frames contents as a section with the given id.
func section(id byte, contents ...byte) []byte {
	return append(binary.AppendUvarint([]byte{id}, uint64(len(contents))), contents...)
}

func name(s string) []byte { return append(binary.AppendUvarint(nil, uint64(len(s))), s...) }

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// testModule imports one item of every kind and re-exports the function.
func testModule() []byte {
	types := section(1, 1, 0x60, 0, 0) // one type: func() -> ()
	imports := section(2, concat(
		[]byte{4},
		name("env"), name("f"), []byte{byte(KindFunc), 0},
		name("extism:host/env"), name("config_get"), []byte{byte(KindFunc), 0},
		name("env"), name("mem"), []byte{byte(KindMemory), 0x01, 1, 2},
		name("env"), name("g"), []byte{byte(KindGlobal), 0x7f, 0},
	)...)
	exports := section(7, concat([]byte{1}, name("run"), []byte{byte(KindFunc), 0})...)
	custom := section(0, name("note")...)
	return concat(magic, version, types, custom, imports, exports)
}

func TestImportsAndExports(t *testing.T) {
	got, err := Imports(testModule())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, imp := range got {
		names = append(names, imp.String()+":"+imp.Kind.String())
	}
	want := []string{"env.f:func", "extism:host/env.config_get:func", "env.mem:memory", "env.g:global"}
	if !slices.Equal(names, want) {
		t.Errorf("Imports = %v, want %v", names, want)
	}
	exports, err := Exports(testModule())
	if err != nil {
		t.Fatal(err)
	}
	if len(exports) != 1 || exports[0] != (Export{Name: "run", Kind: KindFunc, Index: 0}) {
		t.Errorf("Exports = %+v", exports)
	}
}

func TestRename(t *testing.T) {
	wasm := testModule()
	same, err := Rename(wasm, func(Import) string { return "" })
	if err != nil || !bytes.Equal(same, wasm) {
		t.Fatalf("identity Rename changed the module (err %v)", err)
	}
	renamed, err := Rename(wasm, func(imp Import) string {
		if imp.Module == "extism:host/env" {
			return "contractual:host/env"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(wasm, testModule()) {
		t.Fatal("Rename modified its input")
	}
	imports, err := Imports(renamed)
	if err != nil {
		t.Fatal(err)
	}
	if imports[1].String() != "contractual:host/env.config_get" || imports[0].String() != "env.f" {
		t.Errorf("after Rename: %v", imports)
	}
	// The rewritten binary is still a valid module, as wazero sees it, with
	// the import moved and its type intact.
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	cm, err := rt.CompileModule(ctx, renamed)
	if err != nil {
		t.Fatalf("wazero rejects the renamed module: %v", err)
	}
	var seen []string
	for _, f := range cm.ImportedFunctions() {
		mod, n, _ := f.Import()
		seen = append(seen, mod+"."+n)
	}
	if !slices.Equal(seen, []string{"env.f", "contractual:host/env.config_get"}) {
		t.Errorf("wazero sees imports %v", seen)
	}
	if _, ok := cm.ExportedFunctions()["run"]; !ok {
		t.Error("export lost")
	}
}

func TestMalformed(t *testing.T) {
	good := testModule()
	tests := []struct {
		name string
		wasm []byte
	}{
		{"empty", nil},
		{"bad magic", append([]byte("\x00wsm"), version...)},
		{"component", concat(magic, []byte{0x0d, 0, 1, 0})},
		{"section past end", concat(magic, version, []byte{2, 100, 0})},
		{"truncated", good[:len(good)-3]},
		{"long LEB", concat(magic, version, []byte{2, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01})},
		{"import count too large", concat(magic, version, section(2, 0xff, 0xff, 0x03))},
		{"unknown kind", concat(magic, version, section(2, concat([]byte{1}, name("a"), name("b"), []byte{9, 0})...))},
		{"bad limits", concat(magic, version, section(2, concat([]byte{1}, name("a"), name("b"), []byte{2, 0x09, 0})...))},
		{"trailing", concat(magic, version, section(2, concat([]byte{0}, []byte{1})...))},
		{"bad utf8", concat(magic, version, section(2, concat([]byte{1}, name("\xff"), name("b"), []byte{0, 0})...))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Imports(tt.wasm)
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("Imports error = %v, want ErrMalformed", err)
			}
			if _, err := Rename(tt.wasm, func(Import) string { return "x" }); !errors.Is(err, ErrMalformed) {
				t.Errorf("Rename error = %v, want ErrMalformed", err)
			}
		})
	}
}

func FuzzRename(f *testing.F) {
	f.Add(testModule())
	f.Add(concat(magic, version))
	f.Fuzz(func(t *testing.T, wasm []byte) {
		imports, err := Imports(wasm)
		_, _ = Exports(wasm)
		out, rerr := Rename(wasm, func(imp Import) string { return imp.Module + "!" })
		if (err == nil) != (rerr == nil) {
			t.Fatalf("Imports err %v, Rename err %v", err, rerr)
		}
		if err != nil {
			return
		}
		again, err := Imports(out)
		if err != nil {
			t.Fatalf("renamed module does not parse: %v", err)
		}
		if len(again) != len(imports) {
			t.Fatalf("renamed module has %d imports, want %d", len(again), len(imports))
		}
		for i := range again {
			if again[i].Module != imports[i].Module+"!" || again[i].Name != imports[i].Name {
				t.Fatalf("import %d: %v, want %v!", i, again[i], imports[i])
			}
		}
	})
}

// TestSectionSize: the size of a section's contents, 0 for a missing one.
func TestSectionSize(t *testing.T) {
	m := concat(magic, version, section(1, 1, 0x60, 0, 0), section(CodeSectionID, 1, 2, 0, 0x0b))
	for _, tt := range []struct {
		id   byte
		want int
	}{{1, 4}, {CodeSectionID, 4}, {7, 0}} {
		if got, err := SectionSize(m, tt.id); err != nil || got != tt.want {
			t.Errorf("SectionSize(%d) = %d, %v; want %d", tt.id, got, err, tt.want)
		}
	}
	if _, err := SectionSize(m[:len(m)-1], CodeSectionID); !errors.Is(err, ErrMalformed) {
		t.Errorf("truncated module: %v, want ErrMalformed", err)
	}
}
