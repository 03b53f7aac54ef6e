// Package diskprep makes the pre-boot changes to a never-booted ext4 clone that a foreign
// guest (one that boots through its own initrd and init) needs: root's authorized_keys,
// fresh SSH host keys, a regular /etc/resolv.conf. The host never mounts a guest filesystem:
// every change goes through e2fsprogs' debugfs, which edits the image file as data.
//
// debugfs is awkward to drive: it exits 0 after most failures and reports them as text, its
// `write` creates files from host files with the host file's mode and no owner, and its
// command parser has its own quoting. Apply therefore (1) asks debugfs read-only what exists,
// (2) plans commands against that, refusing what would be ambiguous, (3) runs every change in
// one `debugfs -w -f cmdfile` and treats any unexpected output line as an error, and (4) reads
// the result back and checks each edited path's type, mode, owner and size.
package diskprep

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Edits is an ordered batch of changes to an ext4 image. The zero value is an empty batch.
// Each path may be the target of one change only; Apply checks paths and modes.
type Edits struct{ ops []op }

type opKind int

const (
	opMkdir opKind = iota
	opWrite
	opRemove
)

type op struct {
	kind     opKind
	path     string
	perm     fs.FileMode
	uid, gid uint32
	data     []byte
}

// Mkdir makes directory path (its parent must exist or be made earlier in the batch). An
// existing directory is kept, with its mode and owner set to these.
func (e *Edits) Mkdir(path string, perm fs.FileMode, uid, gid uint32) {
	e.ops = append(e.ops, op{kind: opMkdir, path: path, perm: perm, uid: uid, gid: gid})
}

// WriteFile makes path a regular file holding data. Whatever non-directory was there (a
// file, or a symlink such as a container image's /etc/resolv.conf) is removed first: the
// new file never shares an inode with the old one.
func (e *Edits) WriteFile(path string, data []byte, perm fs.FileMode, uid, gid uint32) {
	e.ops = append(e.ops, op{kind: opWrite, path: path, data: data, perm: perm, uid: uid, gid: gid})
}

// Remove unlinks the non-directory at path; nothing there is not an error.
func (e *Edits) Remove(path string) {
	e.ops = append(e.ops, op{kind: opRemove, path: path})
}

// AuthorizeRoot writes root's SSH login keys as kernel-testing's bootstrap does (e2mkdir -P
// 700, e2cp -P 600): /root/.ssh 0700 and /root/.ssh/authorized_keys 0600, owned by 0:0,
// replacing any authorized_keys the image had.
func (e *Edits) AuthorizeRoot(authorizedKeys []byte) {
	e.Mkdir("/root/.ssh", 0o700, 0, 0)
	e.WriteFile("/root/.ssh/authorized_keys", authorizedKeys, 0o600, 0, 0)
}

// Len is the number of changes in the batch.
func (e *Edits) Len() int { return len(e.ops) }

// debugfsPackage is the Debian package that ships debugfs.
const debugfsPackage = "e2fsprogs"

// sbinDirs are searched after PATH: root shells that are not login shells may lack them.
var sbinDirs = []string{"/usr/sbin", "/sbin"}

// Debugfs finds the debugfs binary, or says which package to install.
func Debugfs() (string, error) {
	if p, err := exec.LookPath("debugfs"); err == nil {
		return p, nil
	}
	for _, d := range sbinDirs {
		p := filepath.Join(d, "debugfs")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("debugfs not found: install the Debian package %s", debugfsPackage)
}

// Apply makes the changes in image, an ext4 image file that no VM is using (a fresh clone).
// On error the image may be partly edited: throw the clone away.
func Apply(ctx context.Context, log *slog.Logger, image string, e *Edits) error {
	if e.Len() == 0 {
		return nil
	}
	bin, err := Debugfs()
	if err != nil {
		return err
	}
	if err := e.validate(); err != nil {
		return fmt.Errorf("edit %s: %w", image, err)
	}
	tmp, err := os.MkdirTemp("", "diskprep-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	d := debugfs{bin: bin, image: image, tmp: tmp}

	probed, err := d.stat(ctx, e.probePaths())
	if err != nil {
		return err
	}
	cmds, err := e.plan(probed, tmp)
	if err != nil {
		return fmt.Errorf("edit %s: %w", image, err)
	}
	if _, err := d.run(ctx, true, cmds); err != nil {
		return err
	}
	after, err := d.stat(ctx, e.targets())
	if err != nil {
		return err
	}
	if err := e.verify(after); err != nil {
		return fmt.Errorf("edit %s: debugfs did not apply the changes: %w", image, err)
	}
	log.Debug("edited image with debugfs", "image", image, "changes", e.Len())
	return nil
}

// permBits are the mode bits a change may set: permissions, setuid, setgid, sticky.
const permBits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

func (e *Edits) validate() error {
	seen := map[string]bool{}
	for _, o := range e.ops {
		if err := checkPath(o.path); err != nil {
			return err
		}
		if seen[o.path] {
			return fmt.Errorf("path %q: changed twice in one batch", o.path)
		}
		seen[o.path] = true
		if o.perm&^permBits != 0 {
			return fmt.Errorf("path %q: mode %v: only permission, setuid, setgid and sticky bits may be set", o.path, o.perm)
		}
	}
	return nil
}

// checkPath accepts absolute, clean paths that debugfs can be told unambiguously: its
// command files are line based (no newlines) and its names are C strings (no NUL).
// Everything else, quotes and spaces included, is quoted by quote.
func checkPath(p string) error {
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("path %q: not absolute", p)
	case p == "/":
		return fmt.Errorf("path %q: the root directory cannot be changed", p)
	case path.Clean(p) != p:
		return fmt.Errorf("path %q: not clean (want %q)", p, path.Clean(p))
	case strings.ContainsAny(p, "\x00\n\r"):
		return fmt.Errorf("path %q: contains NUL, CR or LF", p)
	}
	for _, c := range strings.Split(p[1:], "/") {
		if len(c) > 255 {
			return fmt.Errorf("path %q: a name is longer than 255 bytes", p)
		}
	}
	return nil
}

// quote makes s one argument of a debugfs command (its ss parser): inside double quotes
// everything is literal except a double quote, written twice.
func quote(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// kind is what a path names in the image.
type kind int

const (
	absent kind = iota
	dir
	regular
	other // symlink, device, FIFO, socket
)

func (k kind) String() string {
	return [...]string{"absent", "directory", "regular file", "symlink or special file"}[k]
}

// inode is what debugfs `stat` says about a path.
type inode struct {
	kind     kind
	perm     uint32 // the 12 low mode bits
	uid, gid uint32
	size     int64
}

// probePaths are the paths whose state the plan needs: targets and their parents.
func (e *Edits) probePaths() []string {
	seen := map[string]bool{}
	var out []string
	for _, o := range e.ops {
		for _, p := range []string{path.Dir(o.path), o.path} {
			if p != "/" && !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	return out
}

func (e *Edits) targets() []string {
	out := make([]string, len(e.ops))
	for i, o := range e.ops {
		out[i] = o.path
	}
	return out
}

// plan turns the batch into debugfs commands given what the image holds. Data to write is
// put in numbered files under tmp.
func (e *Edits) plan(state map[string]inode, tmp string) ([]command, error) {
	isDir := func(p string) bool { return p == "/" || state[p].kind == dir }
	var cmds []command
	add := func(o op, lines ...string) {
		for _, l := range lines {
			cmds = append(cmds, command{line: l, path: o.path})
		}
	}
	setAttrs := func(p string, typeBits uint32, o op) {
		add(o,
			fmt.Sprintf("set_inode_field %s mode 0%o", quote(p), typeBits|unixPerm(o.perm)),
			fmt.Sprintf("set_inode_field %s uid %d", quote(p), o.uid),
			fmt.Sprintf("set_inode_field %s gid %d", quote(p), o.gid))
	}
	for i, o := range e.ops {
		parent := path.Dir(o.path)
		cur := state[o.path].kind
		switch o.kind {
		case opMkdir:
			if !isDir(parent) {
				return nil, fmt.Errorf("mkdir %q: parent is %s", o.path, state[parent].kind)
			}
			switch cur {
			case absent:
				add(o, "mkdir "+quote(o.path))
			case dir:
			default:
				return nil, fmt.Errorf("mkdir %q: exists as a %s", o.path, cur)
			}
			setAttrs(o.path, 0o040000, o)
			state[o.path] = inode{kind: dir}
		case opWrite:
			if !isDir(parent) {
				return nil, fmt.Errorf("write %q: parent is %s", o.path, state[parent].kind)
			}
			if cur == dir {
				return nil, fmt.Errorf("write %q: exists as a directory", o.path)
			}
			src := filepath.Join(tmp, strconv.Itoa(i))
			if err := os.WriteFile(src, o.data, 0o600); err != nil {
				return nil, err
			}
			// cd + base name: debugfs before 1.43 links `write`'s second argument into the
			// current directory as one name, slashes and all.
			add(o, "cd "+quote(parent))
			if cur != absent {
				add(o, "rm "+quote(path.Base(o.path)))
			}
			add(o, fmt.Sprintf("write %s %s", quote(src), quote(path.Base(o.path))), "cd /")
			setAttrs(o.path, 0o100000, o)
			state[o.path] = inode{kind: regular}
		case opRemove:
			switch cur {
			case absent:
			case dir:
				return nil, fmt.Errorf("remove %q: is a directory", o.path)
			default:
				add(o, "rm "+quote(o.path))
			}
			state[o.path] = inode{kind: absent}
		}
	}
	return cmds, nil
}

func unixPerm(m fs.FileMode) uint32 {
	p := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		p |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		p |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		p |= 0o1000
	}
	return p
}

// verify checks the image now holds what the batch asked for.
func (e *Edits) verify(state map[string]inode) error {
	var errs []error
	for _, o := range e.ops {
		got := state[o.path]
		var want inode
		switch o.kind {
		case opMkdir:
			want = inode{kind: dir, perm: unixPerm(o.perm), uid: o.uid, gid: o.gid, size: got.size}
		case opWrite:
			want = inode{kind: regular, perm: unixPerm(o.perm), uid: o.uid, gid: o.gid, size: int64(len(o.data))}
		case opRemove:
			want = inode{kind: absent}
		}
		if got != want {
			errs = append(errs, fmt.Errorf("%q is %s %04o %d:%d %d bytes, want %s %04o %d:%d %d bytes",
				o.path, got.kind, got.perm, got.uid, got.gid, got.size, want.kind, want.perm, want.uid, want.gid, want.size))
		}
	}
	return errors.Join(errs...)
}

// debugfs runs command files against one image.
type debugfs struct {
	bin, image, tmp string
}

var (
	reBanner  = regexp.MustCompile(`^debugfs \d+\.\d+`)
	reInode   = regexp.MustCompile(`Type:\s+(\S+)\s+Mode:\s+([0-7]+)`)
	reOwner   = regexp.MustCompile(`User:\s+(\d+)\s+Group:\s+(\d+)`)
	reSize    = regexp.MustCompile(`\bSize:\s+(\d+)`)
	reMissing = regexp.MustCompile(`File not found by ext2_lookup|Ext2 inode is not a directory`)
)

// command is one line of a command file and the path it is about.
type command struct {
	line, path string
}

// section is what debugfs printed for one command.
type section struct {
	cmd    string
	output []string
}

// run runs cmds in one debugfs process (read-write if write) and returns each command's
// output. debugfs echoes every command ("debugfs: CMD") and flushes it before running it, so
// with stdout and stderr on one pipe each line can be pinned on its command. For writes,
// every line but the ones listed in harmless is an error.
func (d debugfs) run(ctx context.Context, write bool, cmds []command) ([]section, error) {
	f, err := os.CreateTemp(d.tmp, "cmds-")
	if err != nil {
		return nil, err
	}
	var script strings.Builder
	for _, c := range cmds {
		script.WriteString(c.line + "\n")
	}
	if _, err := f.WriteString(script.String()); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	args := []string{"-f", f.Name(), d.image}
	if write {
		args = append([]string{"-w"}, args...)
	}
	cmd := exec.CommandContext(ctx, d.bin, args...)
	cmd.Env = append(os.Environ(), "DEBUGFS_PAGER=__none__", "PAGER=cat")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out // one pipe: order kept
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("debugfs %s: %w", d.image, ctx.Err())
	}

	var secs []section
	var before []string // printed before the first command: the banner, or open errors
	text := out.String()
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		// A command's echo is exactly its line; debugfs prints some errors with the same
		// "debugfs: " prefix ("debugfs: Bad magic number in super-block while trying to open").
		if len(secs) < len(cmds) && line == "debugfs: "+cmds[len(secs)].line {
			secs = append(secs, section{cmd: cmds[len(secs)].line})
			continue
		}
		if len(secs) == 0 {
			if !reBanner.MatchString(line) && strings.TrimSpace(line) != "" {
				before = append(before, line)
			}
			continue
		}
		secs[len(secs)-1].output = append(secs[len(secs)-1].output, line)
	}
	mode := "debugfs"
	if write {
		mode = "debugfs -w"
	}
	if runErr != nil || len(before) > 0 || len(secs) != len(cmds) {
		why := oneLine(before)
		if why == "" {
			why = oneLine(lastLines(text, 3))
		}
		if runErr != nil {
			why = runErr.Error() + ": " + why
		}
		return nil, fmt.Errorf("%s %s: %s", mode, d.image, why)
	}
	if write {
		var errs []string
		for i, s := range secs {
			for _, l := range s.output {
				if !harmless(l) {
					errs = append(errs, fmt.Sprintf("%s: `%s`: %s", cmds[i].path, s.cmd, strings.TrimSpace(l)))
				}
			}
		}
		if len(errs) > 0 {
			return nil, fmt.Errorf("debugfs -w %s: %s", d.image, strings.Join(errs, "; "))
		}
	}
	return secs, nil
}

// harmless are the lines the commands Apply uses print when they succeed.
func harmless(line string) bool {
	line = strings.TrimSpace(line)
	return line == "" || strings.HasPrefix(line, "Allocated inode: ")
}

// stat asks debugfs (read-only) about paths; a missing path is absent.
func (d debugfs) stat(ctx context.Context, paths []string) (map[string]inode, error) {
	cmds := make([]command, len(paths))
	for i, p := range paths {
		cmds[i] = command{line: "stat " + quote(p), path: p}
	}
	secs, err := d.run(ctx, false, cmds)
	if err != nil {
		return nil, err
	}
	out := make(map[string]inode, len(paths))
	for i, s := range secs {
		in, err := parseStat(s.output)
		if err != nil {
			return nil, fmt.Errorf("debugfs stat %q in %s: %w", paths[i], d.image, err)
		}
		out[paths[i]] = in
	}
	return out, nil
}

func parseStat(lines []string) (inode, error) {
	text := strings.Join(lines, "\n")
	if reMissing.MatchString(text) {
		return inode{kind: absent}, nil
	}
	m, o, s := reInode.FindStringSubmatch(text), reOwner.FindStringSubmatch(text), reSize.FindStringSubmatch(text)
	if m == nil || o == nil || s == nil {
		return inode{}, fmt.Errorf("unexpected output: %s", oneLine(lines))
	}
	var in inode
	switch m[1] {
	case "directory":
		in.kind = dir
	case "regular":
		in.kind = regular
	default:
		in.kind = other
	}
	perm, _ := strconv.ParseUint(m[2], 8, 32)
	uid, _ := strconv.ParseUint(o[1], 10, 32)
	gid, _ := strconv.ParseUint(o[2], 10, 32)
	in.perm, in.uid, in.gid = uint32(perm)&0o7777, uint32(uid), uint32(gid)
	in.size, _ = strconv.ParseInt(s[1], 10, 64)
	return in, nil
}

func oneLine(lines []string) string {
	var keep []string
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "; ")
}

func lastLines(s string, n int) []string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[max(0, len(lines)-n):]
}
