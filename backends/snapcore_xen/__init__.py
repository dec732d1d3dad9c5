"""snapcore xen hypervisor plugin: Xen domains through xl."""
