# Every core at its highest frequency: no ramp-up delay when a burst arrives. Needs
# cpufreq (absent on most VMs, where the hypervisor decides).
SCOPE=host
DESCRIPTION="scaling_governor=performance on every core"
settings() {
  local found=0 gov
  for gov in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor; do
    [[ -e $gov ]] || continue
    echo "$gov=performance"; found=1
  done
  [[ $found == 1 ]] || { echo "no cpufreq on this machine (a VM, or the driver is not loaded)"; return 1; }
}
