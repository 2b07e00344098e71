// VFIO for a guest's ivshmem-doorbell device: the only way a user-space process receives its MSI-X interrupts
// (uio_pci_generic knows only INTx, which the device never raises). Just what `IvshmemDevice` needs: open the
// device through its IOMMU group, find its regions, turn on bus mastering, route each MSI-X vector to an eventfd.
#define _GNU_SOURCE
#include "CVMSock.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/vfio.h>

static int open_group(const char *bdf) {
    char link[PATH_MAX], target[PATH_MAX];
    snprintf(link, sizeof link, "/sys/bus/pci/devices/%s/iommu_group", bdf);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n < 0) return -1;
    target[n] = 0;
    const char *slash = strrchr(target, '/');
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/dev/vfio/%s", slash ? slash + 1 : target);
    return open(path, O_RDWR | O_CLOEXEC);
}

int vms_vfio_open(const char *bdf, vms_vfio *out) {
    out->container = out->group = out->device = -1;
    int container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
    if (container < 0) return -1;
    int group = -1, saved;
    if (ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION) { errno = EPROTO; goto fail; }
    if (ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU) != 1) { errno = ENOTSUP; goto fail; }
    group = open_group(bdf);
    if (group < 0) goto fail;
    struct vfio_group_status status = { .argsz = sizeof status };
    if (ioctl(group, VFIO_GROUP_GET_STATUS, &status) < 0) goto fail;
    // Not viable: another device of the group is bound to a host driver.
    if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) { errno = EBUSY; goto fail; }
    if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) < 0) goto fail;
    if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU) < 0) goto fail;
    int device = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
    if (device < 0) goto fail;
    out->container = container;
    out->group = group;
    out->device = device;
    return 0;
fail:
    saved = errno;
    if (group >= 0) close(group);
    close(container);
    errno = saved;
    return -1;
}

void vms_vfio_close(vms_vfio *vfio) {
    // Closing the device first releases its interrupts; the group and container after it.
    if (vfio->device >= 0) close(vfio->device);
    if (vfio->group >= 0) close(vfio->group);
    if (vfio->container >= 0) close(vfio->container);
    vfio->container = vfio->group = vfio->device = -1;
}

int vms_vfio_region(const vms_vfio *vfio, uint32_t index, uint64_t *offset, uint64_t *size) {
    struct vfio_region_info info = { .argsz = sizeof info, .index = index };
    if (ioctl(vfio->device, VFIO_DEVICE_GET_REGION_INFO, &info) < 0) return -1;
    *offset = info.offset;
    *size = info.size;
    return 0;
}

int vms_vfio_enable_bus_master(const vms_vfio *vfio) {
    uint64_t offset, size;
    if (vms_vfio_region(vfio, VFIO_PCI_CONFIG_REGION_INDEX, &offset, &size) < 0) return -1;
    uint16_t command;
    if (pread(vfio->device, &command, 2, (off_t)(offset + 4)) != 2) return -1;
    command |= 0x4;  // PCI_COMMAND_MASTER
    if (pwrite(vfio->device, &command, 2, (off_t)(offset + 4)) != 2) return -1;
    return 0;
}

int vms_vfio_msix_vectors(const vms_vfio *vfio) {
    struct vfio_irq_info info = { .argsz = sizeof info, .index = VFIO_PCI_MSIX_IRQ_INDEX };
    if (ioctl(vfio->device, VFIO_DEVICE_GET_IRQ_INFO, &info) < 0) return -1;
    return (int)info.count;
}

int vms_vfio_route_msix(const vms_vfio *vfio, const int *fds, uint32_t count) {
    size_t bytes = sizeof(struct vfio_irq_set) + count * sizeof(int32_t);
    struct vfio_irq_set *set = calloc(1, bytes);
    if (!set) return -1;
    set->argsz = (uint32_t)bytes;
    set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    set->index = VFIO_PCI_MSIX_IRQ_INDEX;
    set->start = 0;
    set->count = count;
    memcpy(set->data, fds, count * sizeof(int32_t));
    int result = ioctl(vfio->device, VFIO_DEVICE_SET_IRQS, set);
    int saved = errno;
    free(set);
    errno = saved;
    return result < 0 ? -1 : 0;
}
