// Command microvm-bench boots one kernel and a tiny busybox initrd (whose /init prints a
// marker and reboots) many times under QEMU/TCG and counts hangs: -M microvm with the TSC
// command-line fix, -M microvm without it, and -M q35 for comparison, interleaved so that
// the host's load drifts over all variants alike. It writes a CSV of every boot, the serial
// log of every boot that did not end well, and a Markdown summary. See run.sh.
package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/firegopher/firegopher/internal/vmm/qemu"
)

// Marker is what the bench initrd's /init prints before `reboot -f`.
const Marker = "MICROVM-BENCH-BOOTED"

type variant struct {
	name    string
	n       int
	machine string
	fix     bool
}

type boot struct {
	variant  string
	seq      int           // 1-based within the variant
	toMarker time.Duration // QEMU start to the marker on the serial port; 0 if never
	toExit   time.Duration // QEMU start to its exit (or the kill at the timeout)
	outcome  string        // ok, hang (killed at the timeout), fail (exited without the marker)
}

type config struct {
	vmlinux, initrd, tsc string
	smp                  int
	timeout              time.Duration
	hangDir              string
}

// args is the QEMU command line of one boot. The serial port goes to stdout (-serial stdio)
// so the driver can time the marker as it arrives.
func (c config) args(v *variant) []string {
	appendLine := "console=ttyS0 panic=-1 reboot=k"
	if v.fix {
		appendLine += " " + c.tsc
	}
	return []string{"-M", v.machine, "-cpu", "max", "-smp", strconv.Itoa(c.smp), "-m", "256M",
		"-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", c.vmlinux, "-initrd", c.initrd, "-append", appendLine}
}

func main() {
	var c config
	flag.StringVar(&c.vmlinux, "vmlinux", "", "ELF vmlinux to boot (required)")
	flag.StringVar(&c.initrd, "initrd", "", "bench initrd (required)")
	nFix := flag.Int("fix", 200, "microvm boots with tsc_early_khz/tsc=reliable")
	nNoFix := flag.Int("nofix", 100, "microvm boots without the fix")
	nQ35 := flag.Int("q35", 100, "q35 boots (no fix needed: q35 has a PIT, HPET and ACPI PM timer)")
	flag.DurationVar(&c.timeout, "timeout", 30*time.Second, "a boot still running after this is a hang")
	flag.IntVar(&c.smp, "smp", 1, "guest vCPUs")
	outDir := flag.String("out", "bench/microvm", "directory for boots.csv, hangs/ and RESULTS.md (appended to)")
	flag.Parse()
	if c.vmlinux == "" || c.initrd == "" {
		log.Fatal("-vmlinux and -initrd are required")
	}
	var err error
	if c.tsc, err = qemu.MicrovmTCGCmdline(); err != nil {
		log.Fatal(err)
	}
	variants := []*variant{
		{name: "microvm+tsc", n: *nFix, machine: "microvm,accel=tcg,acpi=on", fix: true},
		{name: "microvm", n: *nNoFix, machine: "microvm,accel=tcg,acpi=on"},
		{name: "q35", n: *nQ35, machine: "q35,accel=tcg"},
	}
	c.hangDir = filepath.Join(*outDir, "hangs")
	if err := os.MkdirAll(c.hangDir, 0o755); err != nil {
		log.Fatal(err)
	}

	started := time.Now()
	load0 := loadavg()
	var boots []boot
	done := map[string]int{}
	// Round robin weighted by each variant's count: with 200/100/100 every round boots
	// microvm+tsc twice and the others once.
	unit := minPositive(variants)
	for remaining(variants, done) {
		for _, v := range variants {
			for k := 0; k < max(1, v.n/unit) && done[v.name] < v.n; k++ {
				done[v.name]++
				b := c.boot(v, done[v.name])
				boots = append(boots, b)
				log.Printf("%-12s %3d/%d %-4s marker %5.2fs exit %5.2fs", b.variant, b.seq, v.n, b.outcome, b.toMarker.Seconds(), b.toExit.Seconds())
			}
		}
	}
	elapsed := time.Since(started)
	if err := writeCSV(filepath.Join(*outDir, "boots.csv"), boots); err != nil {
		log.Fatal(err)
	}
	report := summary(c, variants, boots, elapsed, load0, loadavg())
	fmt.Print(report)
	// Appended, like bench/boot: earlier runs and the notes about them stay.
	f, err := os.OpenFile(filepath.Join(*outDir, "RESULTS.md"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := f.WriteString("\n" + report); err != nil {
		log.Fatal(err)
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
}

func remaining(vs []*variant, done map[string]int) bool {
	for _, v := range vs {
		if done[v.name] < v.n {
			return true
		}
	}
	return false
}

func minPositive(vs []*variant) int {
	m := 0
	for _, v := range vs {
		if v.n > 0 && (m == 0 || v.n < m) {
			m = v.n
		}
	}
	return max(m, 1)
}

func (c config) boot(v *variant, seq int) boot {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	args := c.args(v)
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	var stderr bytes.Buffer
	serial := &markerWriter{marker: []byte(Marker)}
	cmd.Stdout, cmd.Stderr = serial, &stderr
	serial.start = time.Now()
	err := cmd.Run()
	b := boot{variant: v.name, seq: seq, toExit: time.Since(serial.start), toMarker: serial.at, outcome: "ok"}
	switch {
	case ctx.Err() != nil:
		b.outcome = "hang"
	case err != nil || serial.at == 0:
		b.outcome = "fail"
	}
	if b.outcome != "ok" {
		name := filepath.Join(c.hangDir, fmt.Sprintf("%s-%03d-%s.log", strings.ReplaceAll(v.name, "+", "-"), seq, b.outcome))
		note := fmt.Sprintf("# %s boot %d: %s after %.1fs (marker seen: %v); qemu: %v; stderr: %s\n# qemu-system-x86_64 %s\n",
			v.name, seq, b.outcome, b.toExit.Seconds(), serial.at != 0, err, strings.TrimSpace(stderr.String()), strings.Join(args, " "))
		if werr := os.WriteFile(name, append([]byte(note), serial.buf.Bytes()...), 0o644); werr != nil {
			log.Print(werr)
		}
	}
	return b
}

// markerWriter keeps the serial output and notes when the marker first appeared.
type markerWriter struct {
	marker []byte
	buf    bytes.Buffer
	start  time.Time
	at     time.Duration // since start; 0 until seen
}

func (w *markerWriter) Write(p []byte) (int, error) {
	from := max(0, w.buf.Len()-len(w.marker)) // the marker may straddle two writes
	w.buf.Write(p)
	if w.at == 0 && bytes.Contains(w.buf.Bytes()[from:], w.marker) {
		w.at = time.Since(w.start)
	}
	return len(p), nil
}

func writeCSV(path string, boots []boot) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"variant", "seq", "marker_s", "exit_s", "outcome"})
	for _, b := range boots {
		w.Write([]string{b.variant, strconv.Itoa(b.seq), secs(b.toMarker), secs(b.toExit), b.outcome})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) }

type stats struct {
	boots, hangs, fails     int
	markerMedian, markerP90 time.Duration
	exitMedian, exitP90     time.Duration
}

func statsOf(name string, boots []boot) stats {
	var s stats
	var marker, exit []time.Duration
	for _, b := range boots {
		if b.variant != name {
			continue
		}
		s.boots++
		switch b.outcome {
		case "hang":
			s.hangs++
		case "fail":
			s.fails++
		default:
			marker, exit = append(marker, b.toMarker), append(exit, b.toExit)
		}
	}
	s.markerMedian, s.markerP90 = medianP90(marker)
	s.exitMedian, s.exitP90 = medianP90(exit)
	return s
}

// medianP90 gives the median and the nearest-rank 90th percentile.
func medianP90(d []time.Duration) (median, p90 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	median = d[len(d)/2]
	if len(d)%2 == 0 {
		median = (d[len(d)/2-1] + d[len(d)/2]) / 2
	}
	return median, d[(len(d)*9+9)/10-1]
}

func summary(c config, vs []*variant, boots []boot, elapsed time.Duration, load0, load1 string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## %s: %d host cores (shared), QEMU %s, TCG, `-smp %d -m 256M`, timeout %s per boot\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), qemuVersion(), c.smp, c.timeout)
	fmt.Fprintf(&b, "Fix = `%s`. Variants interleaved; %s in total; load average %s at start, %s at end. "+
		"\"boot\" = QEMU start to the initrd's marker on the serial port; \"exit\" = QEMU start to its exit "+
		"(guest `reboot -f`, `reboot=k`, `-no-reboot`). Times over successful boots only.\n\n",
		c.tsc, elapsed.Round(time.Second), load0, load1)
	fmt.Fprintf(&b, "| variant | boots | hangs | other failures | boot median s | boot p90 s | exit median s | exit p90 s |\n")
	fmt.Fprintf(&b, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	all := map[string]stats{}
	for _, v := range vs {
		s := statsOf(v.name, boots)
		all[v.name] = s
		fmt.Fprintf(&b, "| %s | %d | %d (%.1f%%) | %d | %.2f | %.2f | %.2f | %.2f |\n", v.name, s.boots, s.hangs, pct(s.hangs, s.boots),
			s.fails, s.markerMedian.Seconds(), s.markerP90.Seconds(), s.exitMedian.Seconds(), s.exitP90.Seconds())
	}
	if f, q := all["microvm+tsc"], all["q35"]; f.markerMedian > 0 && q.markerMedian > 0 {
		fmt.Fprintf(&b, "\nmicrovm+tsc / q35, boot median: **%.2f**; exit median: %.2f.\n",
			f.markerMedian.Seconds()/q.markerMedian.Seconds(), f.exitMedian.Seconds()/q.exitMedian.Seconds())
	}
	return b.String()
}

func pct(a, n int) float64 {
	if n == 0 {
		return 0
	}
	return 100 * float64(a) / float64(n)
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func qemuVersion() string {
	out, err := exec.Command("qemu-system-x86_64", "--version").Output()
	if err != nil {
		return "?"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimPrefix(line, "QEMU emulator version ")
}
