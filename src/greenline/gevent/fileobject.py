"""``gevent.fileobject``: cooperative file objects.

May import: greenline's modules, not the tools.
"""

from greenline.blocking.fileobject import FileObject, FileObjectBlock, FileObjectPosix, FileObjectThread

__all__ = ["FileObject", "FileObjectBlock", "FileObjectPosix", "FileObjectThread"]
