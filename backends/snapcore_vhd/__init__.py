"""snapcore vhd backend: VHD chains through a native engine or vhd-util, live through tap-ctl."""
